"""Shared test plumbing: start real processes the way a user would.

Tests import this as `helpers` (pytest.ini's `pythonpath = tests` puts tests/ on sys.path; what
tests share beyond processes is in tests/_support/). Every subprocess gets the
repository on PYTHONPATH, one intra-op thread per rank (the CI machine has 2 cores), no CUDA,
and a short process-group timeout so a dead peer fails a test instead of hanging it.

A single-process `python -m MODULE` or `python SCRIPT` of the project, started here or by
launch/run.sh (whose $PYTHON is tests/bin/python), runs as a forked child of one fork server
per session (tests/forkserver.py) that has torch and the project imported: the same process a
user starts, minus ~2.5 s of imports. torchrun's workers are forked too; mpiexec's ranks get
real interpreters (MPI's daemon knows its ranks by the processes it started).
GENBENCH_TEST_FORK=0 makes every process a real interpreter.
"""

import atexit
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import forkserver

ROOT = Path(__file__).resolve().parent.parent
# A subprocess that hangs must fail its test with its own output, before pytest's per-test
# timeout (pytest.ini) kills the whole test without it: every timeout here stays below that.
DEFAULT_TIMEOUT = 600
MAX_TIMEOUT = 600


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_server = None


def _fork_server():
    """The session's fork server, started on first use; None when GENBENCH_TEST_FORK=0."""
    global _server
    if os.environ.get(forkserver.SWITCH_ENV) == "0":
        return None
    if _server is None:
        _server = forkserver.Server(tempfile.mkdtemp(prefix="forkserver-"), _base_env())
        atexit.register(_server.close)
    return _server


def test_env(**extra) -> dict:
    env = _base_env(**extra)
    server = _fork_server()
    if server is not None:
        env[forkserver.SOCKET_ENV] = server.path
        env["PYTHON"] = str(ROOT / "tests" / "bin" / "python")  # launch/run.sh's and the main job's python
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _base_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["TRAINKIT_DIST_TIMEOUT"] = "60"
    env["PYTHON"] = sys.executable
    env["PYTHONUNBUFFERED"] = "1"
    # Let mpiexec start as root and beyond the core count on small CI machines.
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OPENAI_LOGDIR"):
        env.pop(k, None)
    env.update({k: str(v) for k, v in extra.items()})
    # The venv's bin holds mpiexec and torchrun; make sure subprocesses find them.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run(cmd, timeout, env, cwd):
    if timeout > MAX_TIMEOUT:
        raise ValueError(f"subprocess timeout {timeout} s is above helpers.MAX_TIMEOUT {MAX_TIMEOUT} s")
    cmd = [str(c) for c in cmd]
    env = env or test_env()
    if cmd[0] == sys.executable and len(cmd) > 1:
        kind, target = ("module", cmd[2]) if cmd[1] == "-m" and len(cmd) > 2 else ("path", cmd[1])
        if forkserver.forkable(kind, target, env):
            return forkserver.run(cmd, env, cwd or ROOT, timeout)
    return subprocess.run(
        cmd, cwd=str(cwd or ROOT), env=env,
        capture_output=True, text=True, timeout=timeout,
    )


def launch(launcher, nproc, module, *args, flag_files=(), timeout=DEFAULT_TIMEOUT, env=None, cwd=None,
           launch_options=()):
    """Run `launch/run.sh [launch_options] LAUNCHER NPROC [flag files] MODULE args...`."""
    cmd = ["bash", ROOT / "launch" / "run.sh", *launch_options, launcher, nproc, *flag_files, module, *args]
    return _run(cmd, timeout, env, cwd)


def py(module, *args, timeout=DEFAULT_TIMEOUT, env=None, cwd=None):
    """One plain process: `python -m module args...`."""
    return _run([sys.executable, "-m", module, *args], timeout, env, cwd)


def script(path, *args, timeout=DEFAULT_TIMEOUT, env=None, cwd=None):
    """A repository script by path, e.g. datasets/digits.py."""
    return _run([sys.executable, ROOT / path, *args], timeout, env, cwd)


def describe(proc) -> str:
    """Everything a failed subprocess said, for assertion messages."""
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"


def error_lines(proc) -> list:
    """The non-empty lines of stderr."""
    return [line for line in proc.stderr.splitlines() if line.strip()]


def log_two_openai_rows(directory, format_strs=None):
    """Log through openai's `improved_diffusion.logger` into `directory`: a row without a step
    (loss 0.5: row 1, openai's numbering), then one at step 7 (loss 0.25, a logkv_mean); the
    formats are `format_strs`, else $OPENAI_LOG_FORMAT's."""
    from improved_diffusion import logger

    logger.configure(dir=str(directory), format_strs=format_strs)
    try:
        logger.logkv("loss", 0.5)
        logger.dumpkvs()
        logger.logkv("step", 7)
        logger.logkv_mean("loss", 0.25)
        logger.dumpkvs()
    finally:
        logger.Logger.CURRENT.close()
        logger.Logger.CURRENT = logger.Logger.DEFAULT
