"""The fork server (tests/forkserver.py) runs a process as a fresh interpreter would: the same
exit status, output, environment, working directory and argv; signals reach the child through
tests/bin/python, and a child dies with the process that asked for it."""

import os
import re
import signal
import subprocess
import sys

import pytest

import forkserver
import helpers

PROBE = helpers.ROOT / "tests" / "forkserver_probe.py"
SHIM = helpers.ROOT / "tests" / "bin" / "python"


def _both(cmd, tmp_path, **extra):
    """(forked, real) CompletedProcess of the same command line."""
    env = helpers.test_env(PROBE="x", **extra)
    assert forkserver.SOCKET_ENV in env, "the fork server is off (GENBENCH_TEST_FORK=0)"
    assert forkserver.forkable(*(("module", cmd[1]) if cmd[0] == "-m" else ("path", cmd[0])), env)
    forked = forkserver.run([sys.executable, *map(str, cmd)], env, tmp_path, 300)
    real = subprocess.run([sys.executable, *map(str, cmd)], env=dict(env, **{forkserver.SWITCH_ENV: "0"}),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return forked, real


@pytest.mark.parametrize("args", [["3"], ["a message"], []], ids=["code", "message", "zero"])
def test_a_script_sees_and_ends_as_in_a_real_interpreter(args, tmp_path):
    forked, real = _both([PROBE, *args], tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)
    assert f"cwd={tmp_path} probe=x main=__main__" in forked.stdout


def test_an_entry_points_refusal_is_the_real_interpreters(tmp_path):
    forked, real = _both(["-m", "gans.train", "--image_size", "17", "--data_dir", tmp_path], tmp_path)
    assert forked.returncode == real.returncode == 2
    assert forked.stdout == real.stdout and forked.stderr == real.stderr
    assert forked.stderr.startswith("gans.train: error:")


def test_mpi_ranks_and_other_interpreter_uses_are_not_forked():
    env = helpers.test_env()
    assert forkserver.forkable("module", "gans.train", env)
    assert not forkserver.forkable("module", "torch.distributed.run", env)  # torchrun's agent; its workers are:
    assert forkserver.forkable("module", "gans.train", dict(env, RANK="1", WORLD_SIZE="2"))
    assert not forkserver.forkable("module", "torch.utils.bottleneck", env)
    for rank_var in ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK"):  # mpiexec's
        assert not forkserver.forkable("module", "gans.train", dict(env, **{rank_var: "2"}))
    assert not forkserver.forkable("module", "gans.train", dict(env, **{forkserver.SWITCH_ENV: "0"}))
    out = subprocess.run([SHIM, "-c", "import sys; print(sys.argv)"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "['-c']"  # a real interpreter ran -c


def test_sigterm_to_the_shim_reaches_the_child_which_checkpoints(digits, tmp_path):
    """launch/run.sh local execs $PYTHON: the signal a user sends it must stop the run at a step."""
    run_dir = tmp_path / "run"
    cmd = [SHIM, "-m", "trainkit.selfcheck", "--data_dir", digits(16), "--logdir", run_dir, "--max_steps", 10**8,
           "--log_interval", 1, "--save_interval", 10**8]
    proc = subprocess.Popen([str(c) for c in cmd], env=helpers.test_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait for training, not for a timer
            if line.startswith("| step") and int(line.split("|")[2]) >= 2:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert re.search(r"^stopped at step \d+ by a signal", out, re.M), out[-2000:]


def test_a_child_dies_with_the_process_that_asked_for_it(digits, tmp_path):
    """A client that goes away (SIGKILLed, as the kill tests do to a shim) takes its child with
    it: the server's manager kills the child when the client's socket closes."""
    import select

    read, write = os.pipe()
    with open(os.devnull, "rb") as stdin:
        child = forkserver.Forked("module", "trainkit.selfcheck",
                                  ["--data_dir", digits(16), "--logdir", tmp_path / "r", "--max_steps", 10**8,
                                   "--log_interval", 1, "--save_interval", 10**8],
                                  helpers.test_env(), tmp_path, stdin.fileno(), write, write)
    os.close(write)
    with os.fdopen(read) as out:
        for line in out:  # training has begun
            if line.startswith("| step"):
                break
        gone = os.pidfd_open(child.pid)
        child.sock.close()  # what the client's death does
        assert select.select([gone], [], [], 120)[0], "the forked child outlived its client"
        os.close(gone)
