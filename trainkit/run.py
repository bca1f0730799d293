"""Entry-point plumbing shared by every family: flags, run directory, seeds, signals, errors.

A run directory holds `options.json` (every flag as resolved, plus how the run was launched),
the logs and the checkpoints; `load_options` reads the flags back, so a run directory alone is
enough to resume, sample or evaluate.

SIGTERM/SIGINT/SIGUSR1 only set a flag (and so does passing $TRAINKIT_DEADLINE).
`should_stop()` all-reduces that flag, so every rank sees the same answer at the same step,
finishes it, checkpoints and exits 0: a preempted job loses nothing. A second Ctrl-C stops at once.
"""

import argparse
import datetime
import functools
import json
import os
import random
import signal
import sys
import time

import blobfile as bf
import numpy as np
import torch

from . import checkpoint, dist
from .errors import UserError
from .fileio import remove_leftovers, write_text
from .logger import Logger


def program_name() -> str:
    """'improved_diffusion.train' under `python -m improved_diffusion.train`, else the script name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else os.path.basename(sys.argv[0] or "main")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `prog: error: ...`, exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("prog", program_name())
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def str2bool(v) -> bool:
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {v!r}")


def add_run_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--logdir", default="", help="run directory (default: $OPENAI_LOGDIR, else runs/<family>-<time>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dist_timeout", type=float, default=None,
                        help="seconds a collective waits for a peer before failing (default $TRAINKIT_DIST_TIMEOUT or 1800)")
    return parser


class Run:
    def __init__(self, dir: str, logger: Logger, options: dict, resume=None):
        self.dir = dir
        self.logger = logger
        self.options = options
        self.resume = resume  # the checkpoint.Checkpoint to continue from, or None


def _default_dir(family: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return os.path.join("runs", f"{family}-{stamp}")


def resolve_logdir(family: str, logdir: str = "") -> str:
    """--logdir, else $OPENAI_LOGDIR, else runs/<family>-<time>; the same on every rank."""
    chosen = logdir or os.environ.get("OPENAI_LOGDIR") or _default_dir(family)
    return dist.broadcast_object(chosen)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resume_point(value: str, run_dir: str, flag: str = "--resume_checkpoint"):
    """What a training run continues from: a checkpoint.Checkpoint, or None to start at step 0.

    `value` is the resume flag: "" (a new run), "auto" (the newest complete checkpoint of the
    run directory itself, or a fresh start when it has none: the same command line serves the
    first start and every restart, as torchrun --max-restarts and Slurm --requeue need), or a
    run directory / checkpoint file. A new run into a directory that already holds checkpoints
    is refused so that it cannot overwrite them.
    """
    if value == "auto":
        return checkpoint.latest(run_dir)
    if value:
        return checkpoint.resolve(value)
    existing = checkpoint.steps(run_dir)
    if existing:
        raise UserError(f"{run_dir}: already holds checkpoints (newest step {existing[0]}); pass "
                        f"{flag} auto to continue it, or choose another --logdir")
    return None


def _agreed(fn, *args):
    """fn(*args) on rank 0, its result or UserError raised on every rank alike (no rank is
    left waiting in a collective for one that failed)."""
    outcome = None
    if dist.is_main():
        try:
            outcome = ("ok", fn(*args))
        except UserError as e:
            outcome = ("error", str(e))
    kind, value = dist.broadcast_object(outcome)
    if kind == "error":
        raise UserError(value)
    return value


def setup(family: str, args, logdir=None, stdout=True, resume=None, resume_flag="--resume_checkpoint") -> Run:
    """Join the process group, create the run directory, write options.json, seed, trap signals.

    With `resume` (the value of the family's resume flag, see `resume_point`), the checkpoint to
    continue from is found before anything is written, and returned as `Run.resume`.

    Seeds are seed + rank so ranks draw different noise; models built after this differ between
    ranks until `dist.wrap_ddp` broadcasts rank 0's weights, so build EMA copies after wrapping.
    """
    dist.init(getattr(args, "dist_timeout", None))
    options = dict(vars(args))
    run_dir = resolve_logdir(family, logdir if logdir is not None else options.get("logdir", ""))
    ck = _agreed(resume_point, resume, run_dir, resume_flag) if resume is not None else None
    # A killed run may have left half-written temporaries. A training run (one that passes
    # `resume`) is its directory's only writer, so they can go; the complete files they would
    # have replaced are untouched. Samplers may share a directory with a live run: not them.
    leftovers = remove_leftovers(run_dir) if dist.is_main() and resume is not None else 0
    if dist.is_main():
        try:
            bf.makedirs(run_dir)
        except OSError as e:
            raise UserError(f"{run_dir}: cannot create the run directory ({e.strerror or e})") from None
        record = dict(options)
        record["_run"] = {
            "family": family,
            "launcher": dist.launcher(),
            "world_size": dist.world_size(),
            "argv": sys.argv,
            "torch": torch.__version__,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "deadline": deadline(),
        }
        write_text(bf.join(run_dir, "options.json"), json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    dist.barrier()
    seed_all(int(options.get("seed", 0) or 0) + dist.rank())
    install_signal_handlers()
    logger = Logger(run_dir, stdout=stdout)
    logger.log(f"Logging to {run_dir} ({dist.launcher()}, {dist.world_size()} rank(s), device {dist.device()})")
    if leftovers:
        logger.log(f"removed {leftovers} temporary file(s) of an interrupted write")
    if ck is None and resume == "auto":
        logger.log(f"no complete checkpoint in {run_dir} yet: starting at step 0")
    return Run(run_dir, logger, options, ck)


def load_options(path: str) -> dict:
    """The flags saved in a run directory (or in the directory of a checkpoint file)."""
    directory = path if bf.isdir(path) else bf.dirname(path)
    f = bf.join(directory, "options.json")
    if not bf.exists(f):
        raise UserError(f"{directory}: no options.json (not a run directory of this project)")
    try:
        with bf.BlobFile(f, "r") as fh:
            options = json.load(fh)
    except json.JSONDecodeError as e:
        raise UserError(f"{f}: not valid JSON ({e})") from None
    options.pop("_run", None)
    return options


# --- stopping on signals ----------------------------------------------------------------

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

    Past it, `should_stop()` turns true exactly as after SIGTERM, so any family stops at the
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


def should_stop() -> bool:
    """True once any rank has received SIGTERM/SIGINT. Collective: call on every rank."""
    return dist.all_reduce_sum(1.0 if stop_requested() else 0.0) > 0


# --- RNG state --------------------------------------------------------------------------

def _local_rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().cpu()
    return state


def rng_state() -> list:
    """Every rank's RNG states (torch, cuda, numpy, python), in rank order. Collective."""
    return dist.all_gather_object(_local_rng_state())


def set_rng_state(states: list) -> None:
    """Restore this rank's entry of `rng_state()`'s list (weights_only-loadable)."""
    s = states[dist.rank() % len(states)]
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


# --- entry points -----------------------------------------------------------------------

def main(fn):
    """Wrap an entry point: a UserError becomes `module: error: message` and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        prog = program_name() if fn.__module__ == "__main__" else fn.__module__
        try:
            result = fn(*args, **kwargs)
            dist.shutdown(wait_for_peers=True)
            return result
        except UserError as e:
            sys.stdout.flush()
            print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
            code = 2
        finally:
            dist.shutdown()
        sys.exit(code)

    return wrapper
