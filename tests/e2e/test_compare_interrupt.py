"""Issue 38's defect "an interrupted main job may leave its launcher running": launch/run.sh runs
mpiexec / torchrun in a session of its own, so a main job that killed only run.sh on Ctrl-C left
the launcher and its ranks training. SIGINT to the main job during a 2-rank training stage must
leave no process of the job behind (evaluations.stages' stop policy)."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

import helpers

MARK = "GENBENCH_INTERRUPT_TEST"


def _processes(mark):
    """{pid: argv} of the live processes whose environment carries `MARK=mark` (every process the
    job starts inherits it, whichever session or parent it ends up in)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{name}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # ended, not yet reaped
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if f"{MARK}={mark}".encode() in env:
            found[int(name)] = argv
    return found


def _until(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)  # a poll's interval, not a wait for the event
    pytest.fail(f"{what}: not within {seconds} s")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_sigint_during_training_leaves_no_process_of_the_job(tmp_path, digits, launcher):
    if launcher == "mpiexec":
        pytest.importorskip("mpi4py")
    config = tmp_path / "long.sh"
    config.write_text(
        f'DATA_DIR="{digits(16).parent}"\nNPROC=2\nMINUTES=30\nPROBE_POINTS=0\nNUM_SAMPLES=20\nSAMPLE_BATCH=10\n'
        'RUNS="\ndcgan | flags/gans/dcgan_digits.sh | gans | 1 | --max_steps 1000000 --nz 8 --ngf 8 --ndf 8 |\n"\n')
    mark = uuid.uuid4().hex
    # the real interpreter (not the suite's fork server): every rank a descendant of the launcher
    env = helpers.test_env(**{MARK: mark, "PYTHON": sys.executable})
    env.pop("GENBENCH_FORKSERVER", None)
    job = subprocess.Popen([sys.executable, "-m", "evaluations.compare", "--config", str(config), "--logdir",
                            str(tmp_path / "cmp"), "--launcher", launcher, "--no_baseline", "--no_control"],
                           cwd=helpers.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def ranks():  # `python [-u] -m gans.train ...`, not torchrun's agent (`-m torch.distributed.run`)
            return [p for p, argv in _processes(mark).items()
                    if "gans.train" in argv and "torch.distributed.run" not in argv]

        # both ranks of the training stage are up (its launcher with them)
        _until(lambda: len(ranks()) >= 2, 240, "two ranks of the training")
        job.send_signal(signal.SIGINT)
        output = job.communicate(timeout=120)[0]
        left = _until(lambda: not _processes(mark) and ["none"], 60, f"the job's processes ending "
                      f"(left: {_processes(mark)})")
        assert left == ["none"]
        assert job.returncode == 130, output
        assert "interrupted" in output.splitlines()[-1], output
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        for pid in _processes(mark):  # a failing run leaves nothing behind for the next test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
