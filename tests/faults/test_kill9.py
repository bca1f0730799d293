"""kill -9 at 20 random moments of a training run, then resume, every time.

The run is the runtime's self-check (trainkit.selfcheck): what a kill can break (atomic
checkpoint writes, finding the newest complete step, removing leftovers, restoring RNG and data
position) is trainkit's, the same code for every family; that each family's own state comes back
bit for bit from its files is tests/contract/test_task_contract.py's.

The run checkpoints every step and restarts with `--resume_checkpoint auto` (ddgan: `--resume
auto`), the command line a preempted job or torchrun --max-restarts repeats. After every kill:

- every checkpoint file under its final name loads (writes are atomic: a kill leaves at most a
  `.tmp-*` file, which the next start removes);
- the newest complete step never goes back;
- the next start says it resumes from exactly that step (or starts at 0 when there is none).

After the 20th kill the run is let finish a few steps further, and its last checkpoint must be
bit-identical to a run that went there straight: no kill lost or changed anything that a
checkpoint records (weights, EMA, optimiser, data position, RNG, loss scale).

The moments are random (seeded, printed on failure): half within start-up and the first step,
half within the next four steps, both measured on calibration runs, so they fall in set-up,
data loading, training steps and checkpoint writes alike. Runs are forked from the session's
fork server (tests/forkserver.py), which has the code imported.
"""

import os
import random
import time

import pytest

from _support import faultlib
from trainkit import checkpoint, fileio
from trainkit.errors import UserError

KILLS = 20


@pytest.fixture
def zygote():
    return faultlib.Zygote()


def timed_run(zygote, family, data, logdir, steps):
    started = time.monotonic()
    code = zygote.run(family.module, family.argv(data, logdir, steps), f"{logdir}.log")
    assert code == 0, open(f"{logdir}.log").read()[-3000:]
    return time.monotonic() - started


def check_files_load(run_dir, seen):
    """Every checkpoint file under its final name loads; `seen` skips those checked before."""
    for name in sorted(os.listdir(run_dir)):
        if name.endswith(".pt") and not name.startswith(fileio.TMP_PREFIX) and name not in seen:
            try:
                checkpoint.load(os.path.join(run_dir, name))
            except UserError as e:
                raise AssertionError(f"unreadable checkpoint file after a kill: {e}") from None
            seen.add(name)


def resumed_step(log_path):
    """The step a start said it continues from; None for a fresh start; "unsaid" when it was
    killed before it got that far."""
    text = open(log_path).read() if os.path.exists(log_path) else ""
    match = faultlib.RESUMED.search(text)
    if match:
        return int(match["step"])
    return None if faultlib.FRESH in text else "unsaid"


@pytest.mark.slow
def test_kill9_twenty_times_then_resume_equals_straight_run(zygote, digits, tmp_path):
    family = faultlib.SELFCHECK
    name = family.name
    data = digits(16)
    seed = int(os.environ.get("FAULT_SEED", "0")) + sum(map(ord, name))
    rng = random.Random(seed)

    # Calibrate the window: a 1-step run is start-up plus a step; 6 steps give the step time.
    one = timed_run(zygote, family, data, tmp_path / "calibrate1", 1)
    six = timed_run(zygote, family, data, tmp_path / "calibrate6", 6)
    step_time = max((six - one) / 5, 0.01)

    run_dir = tmp_path / "killed"
    seen, latest, kills, attempt, mid_write = set(), None, [], 0, 0
    while len(kills) < KILLS:
        attempt += 1
        assert attempt <= 3 * KILLS, f"only {len(kills)} kills landed in {attempt} starts (seed {seed})"
        log = tmp_path / f"attempt{attempt:02d}.log"
        # half the moments in start-up and the first step, half in the steps and checkpoint
        # writes after it (start-up is most of a tiny run's time)
        delay = rng.uniform(0, one) if attempt % 2 else one + rng.uniform(0, 4 * step_time)
        pid = zygote.start(family.module, family.argv(data, run_dir, 10**6), log)
        code = zygote.wait(timeout=delay)
        if code is None:
            os.kill(pid, 9)
            code = zygote.wait(timeout=120)
            assert code == -9, f"attempt {attempt}: exit {code} after SIGKILL"
            kills.append(round(delay, 2))
        else:
            raise AssertionError(f"attempt {attempt} ended by itself with {code}: {log.read_text()[-3000:]}")

        # the start we just killed continued from the newest complete step (if it got that far)
        said = resumed_step(log)
        if said != "unsaid":
            assert said == latest, f"attempt {attempt} resumed from {said}, newest complete was {latest} (seed {seed})"
        ck = None
        if run_dir.exists():
            mid_write += any(n.startswith(fileio.TMP_PREFIX) for n in os.listdir(run_dir))
            check_files_load(run_dir, seen)
            ck = checkpoint.latest(str(run_dir))
        step = ck.step if ck else None
        assert (step or 0) >= (latest or 0), f"newest complete step went back from {latest} to {step} (seed {seed})"
        latest = step

    # finish a few steps past the last complete checkpoint, and go there straight for comparison
    target = (latest or 0) + 3
    log = tmp_path / "final.log"
    code = zygote.run(family.module, family.argv(data, run_dir, target), log)
    assert code == 0, log.read_text()[-3000:]
    assert resumed_step(log) == latest
    assert not [n for n in os.listdir(run_dir) if n.startswith(fileio.TMP_PREFIX)], "temporaries left behind"
    straight = tmp_path / "straight"
    timed_run(zygote, family, data, straight, target)
    faultlib.assert_same_step(family, run_dir, straight, target)
    print(f"{name}: {len(kills)} kills at {kills} s (start-up and a step {one:.2f} s, step {step_time:.2f} s), "
          f"{mid_write} in the middle of writing a file, "
          f"newest complete step before the last start: {latest}")
