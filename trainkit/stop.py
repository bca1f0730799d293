"""Stopping on signals and on $TRAINKIT_DEADLINE: what this rank has been asked.

SIGTERM/SIGINT/SIGUSR1 only set a flag (and so does passing $TRAINKIT_DEADLINE);
`stop_requested()` reads it. The training loop (trainkit.loop, trainkit.vote) votes on it
across ranks, so every rank stops at the same step, checkpoints and exits 0. A second Ctrl-C
stops at once.
"""

import os
import signal
import time

from .errors import UserError

_signals = {"count": 0, "interrupts": 0}


def _on_signal(signum, frame):
    _signals["count"] += 1
    if signum == signal.SIGINT:
        _signals["interrupts"] += 1
        if _signals["interrupts"] > 1:
            # A second Ctrl-C means "now": fall back to the default behaviour.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def install_signal_handlers() -> None:
    """SIGTERM, SIGINT and SIGUSR1 ask for a stop at the end of the current step.

    SIGUSR1 is what launch/run.sh sends through mpiexec (which kills ranks on SIGTERM but
    forwards SIGUSR1). Only a second SIGINT stops at once: SIGTERM often arrives twice (Slurm
    signals every process of a job step and torchrun's agent signals its workers again), and
    that must not cut a checkpoint short.
    """
    _signals["count"] = 0
    _signals["interrupts"] = 0
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(s, _on_signal)


def deadline():
    """$TRAINKIT_DEADLINE (unix seconds) or None: a time budget for the whole run.

    Past it, `stop_requested()` turns true exactly as after SIGTERM, so any family stops at the
    current step, checkpoints and exits 0. The comparison uses it to give each family a share
    of `--minutes`; a batch job can set it a little before its time limit.
    """
    value = os.environ.get("TRAINKIT_DEADLINE", "")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise UserError(f"TRAINKIT_DEADLINE: {value!r} is not a unix time in seconds") from None


def signalled() -> bool:
    """A signal (not the deadline) asked this process to stop."""
    return _signals["count"] > 0


def stop_requested() -> bool:
    """This rank's own view: a signal arrived or the deadline passed (no communication)."""
    if _signals["count"] > 0:
        return True
    limit = deadline()
    return limit is not None and time.time() >= limit


def stopped_message(step: int, run_dir: str, resume_flag: str = "--resume_checkpoint") -> str:
    """The line every family logs when a signal or the deadline ends training (after it wrote
    the step's checkpoint): the step, and the command-line change that continues the run."""
    return (f"stopped at step {step} by a signal or $TRAINKIT_DEADLINE, checkpoint written; "
            f"continue with {resume_flag} auto --logdir {run_dir}")
