"""Shared test plumbing: start real processes the way a user would.

Tests import this as `helpers` (pytest puts tests/ on sys.path). Every subprocess gets the
repository on PYTHONPATH, one intra-op thread per rank (the CI machine has 2 cores), no CUDA,
and a short process-group timeout so a dead peer fails a test instead of hanging it.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 600


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_env(**extra) -> dict:
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
    return subprocess.run(
        [str(c) for c in cmd], cwd=str(cwd or ROOT), env=env or test_env(),
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


def main_in_process(module, argv, monkeypatch, capsys):
    """(exit code, stderr) of `module.main()` run in this process with `argv` as its command
    line; the signal handlers entry points install are put back afterwards."""
    import signal

    import pytest

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    monkeypatch.setattr(sys, "argv", [module.__name__, *map(str, argv)])
    try:
        with pytest.raises(SystemExit) as e:
            module.main()
            raise SystemExit(0)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    return e.value.code, capsys.readouterr().err
