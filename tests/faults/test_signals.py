"""Preemption and dead ranks, with 2 ranks under the real launchers, on the runtime's
self-check (trainkit.selfcheck): the stop vote, the signal handling of launch/run.sh and of the
loop, and the dead-rank timeouts are trainkit's, the same for every family (each family's own
SIGTERM at a step: tests/contract/test_gans_cli.py and the families' launcher tests).

- SIGTERM to the launcher (launch/run.sh, which is what tmux, Slurm and users start): every
  rank finishes its step, checkpoints it and exits 0, so the launcher exits 0, within 30 s; the
  next start with `auto` resumes from exactly that step. The chain mpiexec -> torchrun -> one
  plain process also shows that a run moves between launchers.
- kill -9 of one rank: the job fails (non-zero) instead of hanging, and no process is left.

Nothing here waits on a timer: the tests read the run's own output until it shows training.
"""

import os
import re
import select
import signal
import subprocess
import time

import pytest

import helpers
from _support import faultlib
from trainkit import checkpoint

pytestmark = pytest.mark.slow  # every test here starts a launcher

STOP_DEADLINE = 30  # the bound, and torchrun's default grace before it kills workers
STOPPED = re.compile(r"^stopped at step (\d+) by a signal", re.M)


def start(launcher, family, data, run_dir, max_steps=10**6, nproc=2):
    """launch/run.sh as a user starts it, in a background process the test can signal."""
    argv = [*family.tiny, "--data_dir", data, "--logdir", run_dir, "--max_steps", max_steps,
            "--save_interval", 10**6, family.resume_flag, "auto"]
    cmd = ["bash", helpers.ROOT / "launch" / "run.sh", launcher, nproc, *family.flag_files(), family.module, *argv]
    return subprocess.Popen([str(c) for c in cmd], cwd=helpers.ROOT, env=helpers.test_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def read_until(proc, pattern, timeout=300):
    """Everything the process printed up to the first match of `pattern` (bytes regex)."""
    seen, deadline = b"", time.monotonic() + timeout
    while not re.search(pattern, seen, re.M):
        left = deadline - time.monotonic()
        ready = left > 0 and select.select([proc.stdout], [], [], left)[0]
        assert ready, f"no {pattern!r} within {timeout} s:\n{seen[-3000:].decode(errors='replace')}"
        chunk = os.read(proc.stdout.fileno(), 65536)
        assert chunk, f"output ended (exit {proc.wait()}) before {pattern!r}:\n{seen[-3000:].decode(errors='replace')}"
        seen += chunk
    return seen


def finish(proc, timeout):
    """Exit code and the rest of the output, within `timeout` seconds (or the test fails)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, _ = proc.communicate()
        raise AssertionError(f"still running {timeout} s later:\n{out[-3000:].decode(errors='replace')}")
    return proc.returncode, out.decode(errors="replace")


def process_tree():
    """{parent pid: [child pids]} of every process, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid):
    """Every process below `pid`."""
    tree, found, todo = process_tree(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(pid):
    for p in descendants(pid) + [pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def training_row(step):
    return rb"^\| step\s+\| %d\s" % step


def test_sigterm_to_the_launcher_checkpoints_and_the_next_start_resumes(digits, tmp_path):
    family, data, run_dir = faultlib.SELFCHECK, digits(16), tmp_path / "run"
    previous = None
    for launcher in ("mpiexec", "torchrun"):
        proc = start(launcher, family, data, run_dir)
        try:
            seen = read_until(proc, training_row((previous or 0) + 2))
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code, rest = finish(proc, timeout=STOP_DEADLINE)
        finally:
            kill_tree(proc.pid)
        took = time.monotonic() - signalled
        output = seen.decode(errors="replace") + rest
        assert code == 0, f"{launcher}: exit {code} {took:.1f} s after SIGTERM:\n{output[-3000:]}"
        stopped = STOPPED.search(output)
        assert stopped, output[-3000:]
        step = int(stopped[1])
        ck = checkpoint.latest(str(run_dir))
        assert ck is not None and ck.step == step, f"{launcher}: stopped at {step}, newest checkpoint {ck}"
        if previous is not None:
            resumed = faultlib.RESUMED.search(output)
            assert resumed and int(resumed["step"]) == previous, output[-3000:]
        assert not [p for p in descendants(proc.pid) if alive(p)]
        previous = step

    # and a plain process continues from there to one step further
    proc = helpers.launch("local", 1, family.module, *family.tiny, "--data_dir", data, "--logdir", run_dir,
                          "--max_steps", previous + 1, family.resume_flag, "auto", flag_files=family.flag_files())
    assert proc.returncode == 0, helpers.describe(proc)
    resumed = faultlib.RESUMED.search(proc.stdout + proc.stderr)
    assert resumed and int(resumed["step"]) == previous
    assert checkpoint.latest(str(run_dir)).step == previous + 1


@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_one_rank_killed_fails_the_job_without_a_hang(launcher, digits, tmp_path):
    family = faultlib.SELFCHECK
    proc = start(launcher, family, digits(16), tmp_path / "run")
    try:
        read_until(proc, training_row(2))
        # run.sh -> the launcher (mpiexec or torchrun's agent, whose command lines name the
        # module too) -> the ranks
        (launcher_pid,) = process_tree()[proc.pid]
        ranks = [p for p in descendants(launcher_pid)
                 if family.module.encode() in open(f"/proc/{p}/cmdline", "rb").read()]
        assert len(ranks) == 2, ranks
        os.kill(ranks[-1], signal.SIGKILL)
        # the survivor's collective fails at once (closed connection) or at the process-group
        # timeout, which helpers.test_env sets to 60 s; then the launcher ends the job
        code, out = finish(proc, timeout=60 + 120)
    finally:
        kill_tree(proc.pid)
    assert code != 0, out[-3000:]
    assert not [p for p in ranks if alive(p)], "a rank outlived its job"


def test_mpiexec_ranks_get_time_for_a_slow_checkpoint(digits, tmp_path):
    """mpiexec itself kills its ranks within a second of SIGTERM; run.sh must not let it, so a
    checkpoint that takes seconds (a large model) still completes."""
    cmd = ["bash", helpers.ROOT / "launch" / "run.sh", "mpiexec", 2, "trainkit.selfcheck", "--data_dir", digits(16),
           "--logdir", tmp_path / "run", "--max_steps", 10**6, "--log_interval", 1, "--save_interval", 10**6,
           "--save_delay", 3]
    proc = subprocess.Popen([str(c) for c in cmd], cwd=helpers.ROOT, env=helpers.test_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        read_until(proc, training_row(2))
        proc.send_signal(signal.SIGTERM)
        code, out = finish(proc, timeout=STOP_DEADLINE)
    finally:
        kill_tree(proc.pid)
    assert code == 0, out[-3000:]
    step = int(STOPPED.search(out)[1])
    assert checkpoint.latest(str(tmp_path / "run")).step == step


def test_torchrun_max_restarts_resumes_after_a_dead_rank(digits, tmp_path):
    """torchrun --max-restarts starts every worker again with the same command line; with `auto`
    they continue from the newest checkpoint and the job still ends with exit 0."""
    run_dir = tmp_path / "run"
    proc = helpers.launch("torchrun", 2, "trainkit.selfcheck", "--data_dir", digits(16), "--logdir", run_dir,
                          "--max_steps", 8, "--save_interval", 2, "--selfkill_rank", 1, "--selfkill_step", 5,
                          "--resume_checkpoint", "auto", env=helpers.test_env(TORCHRUN_ARGS="--max-restarts 1"))
    assert proc.returncode == 0, helpers.describe(proc)
    resumed = faultlib.RESUMED.search(proc.stdout)
    assert resumed and int(resumed["step"]) == 4, proc.stdout[-3000:]
    assert checkpoint.latest(str(run_dir)).step == 8
