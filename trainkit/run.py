"""The run directory and the entry point around it: `setup` (process group, run directory,
options.json, seeds, signals, logger), the options read back, and `main` (errors to one line).

A run directory holds `options.json` (every flag as resolved, plus how the run was launched),
the logs and the checkpoints; `load_options` reads the flags back, so a run directory alone is
enough to resume, sample or evaluate.

The run-directory policy (`setup`), the same for every family and entry point:
- a training run resumes (`--resume_checkpoint FILE|RUN_DIR|auto`) or starts fresh; a fresh
  start into a directory that holds checkpoints (ours, or openai's model/ema/opt files) is
  refused, and so is a resume that would write steps a directory already has;
- a step written by openai's code that a run continues in its own folder is adopted: only a
  state file is added beside openai's files, none of which is ever rewritten;
- a sampler, nll, interpolation or any other entry point that is not training never rewrites a
  run's files: when its directory already holds a run (options.json, logs, checkpoints or
  samples: e.g. OPENAI_LOGDIR still pointing at the training run), it writes into a fresh
  subfolder `<role>-<time>/` of it and says so.

The flags every entry point shares are trainkit.flags', stopping on signals trainkit.stop's,
the random streams trainkit.rng's: their names stay importable from here.
"""

import datetime
import functools
import json
import os
import secrets
import socket
import sys
import time
import traceback

import blobfile as bf
import torch

from . import checkpoint, dist
from .errors import UserError
from .fileio import TMP_PREFIX, is_local, remove_leftovers, write_text
from .flags import (  # noqa: F401 (re-export)
    NONNEG_FLOAT,
    NONNEG_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    ArgumentParser,
    HelpFormatter,
    add_run_args,
    compiled,
    float_range,
    int_range,
    program_name,
    str2bool,
)
from .logger import Logger, require_tensorboard, require_wandb
from .rng import reseed, rng_state, seed_all, set_rng_state  # noqa: F401 (re-export)
from .stop import _signals, deadline, install_signal_handlers, signalled, stop_requested, stopped_message  # noqa: F401 (re-export)


class Run:
    def __init__(self, dir: str, logger: Logger, options: dict, resume=None, options_path=None):
        self.dir = dir
        self.logger = logger
        self.options = options
        self.resume = resume  # the checkpoint.Checkpoint to continue from, or None
        # the options.json `setup` wrote for this run (None: a Run made otherwise, whose
        # options file, if any, is not this run's to rewrite: record_options leaves it alone)
        self.options_path = options_path


# Entries of options.json that a training run adds after setup (record_options), not flags:
# what the Task declares for evaluation (trainkit.loop.Task.loss_keys / discriminator_keys).
RECORDED_KEYS = ("loss_keys", "discriminator_keys")


def record_options(run_, **entries) -> bool:
    """Add `entries` to the options.json that `setup` wrote for `run_` in this process (rank 0
    writes, atomically; other ranks do nothing; no collective). A Run whose options file this
    run did not write is left alone: returns whether the file was written."""
    path = getattr(run_, "options_path", None)
    if not path or not dist.is_main():
        return False
    with dist.rank_zero_only("run.record_options"):
        record = read_options_file(path)
        record.update(entries)
        write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        return True


def _default_dir(family: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return os.path.join("runs", f"{family}-{stamp}")


def resolve_logdir(family: str, logdir: str = "") -> str:
    """--logdir, else $OPENAI_LOGDIR, else runs/<family>-<time>; the same on every rank."""
    chosen = logdir or os.environ.get("OPENAI_LOGDIR") or _default_dir(family)
    return dist.broadcast_object(chosen)



def _same_dir(a: str, b: str) -> bool:
    a, b = str(a).rstrip("/") or ".", str(b).rstrip("/") or "."
    if is_local(a) and is_local(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return a == b


def resume_point(value: str, run_dir: str, flag: str = "--resume_checkpoint"):
    """What a training run continues from: a checkpoint.Checkpoint, or None to start at step 0.

    `value` is the resume flag: "" (a new run), "auto" (the newest complete checkpoint of the
    run directory itself, or a fresh start when it has none: the same command line serves the
    first start and every restart, as torchrun --max-restarts and Slurm --requeue need), or a
    run directory / checkpoint file. Nothing may lead to a checkpoint being overwritten: a new
    run into a directory that already holds checkpoints is refused, and so is a resume into a
    directory holding steps beyond the one resumed. A step of openai's code continued in its own
    folder is adopted (`checkpoint.adopt`), so that later starts see it as complete.
    """
    if value == "auto":
        ck = checkpoint.latest(run_dir)
    elif value:
        ck = checkpoint.resolve(value)
        here = checkpoint.latest(run_dir) if bf.isdir(run_dir) else None
        if not _same_dir(ck.dir, run_dir) and checkpoint.steps(run_dir):
            raise UserError(f"{run_dir}: already holds checkpoints (newest step {checkpoint.steps(run_dir)[0]}); "
                            f"resuming {value} into it could overwrite them; choose another --logdir")
        if here is not None and _same_dir(ck.dir, run_dir) and here.step > ck.step:
            raise UserError(f"{run_dir}: holds step {here.step}, newer than step {ck.step} of {value}; "
                            f"continuing from the older step would overwrite it; choose another --logdir")
    else:
        existing = checkpoint.steps(run_dir)
        if existing:
            raise UserError(f"{run_dir}: already holds checkpoints (newest step {existing[0]}); pass "
                            f"{flag} auto to continue it, or choose another --logdir")
        _refuse_other_role(run_dir)
        return None
    # also a run continuing in its own directory: it rewrites its options.json, which must be
    # a training run's, and readable (a damaged one is refused by name, not overwritten)
    _refuse_other_role(run_dir)
    if ck is not None and ck.state is None and _same_dir(ck.dir, run_dir):
        ck = checkpoint.adopt(ck)
    return ck


def _refuse_other_role(run_dir: str) -> None:
    """A training run starting in a directory must not rewrite the options.json of a sampler's
    (or any other non-training) run that lives there."""
    path = bf.join(run_dir, "options.json")
    if not bf.exists(path):
        return
    role = (read_options_file(path).get("_run") or {}).get("role", "train")
    if role != "train":
        raise UserError(f"{run_dir}: holds a {role} run (its options.json); training there would rewrite it; "
                        "choose another --logdir")


RUN_FILES = ("options.json", "log.txt", "progress.csv", "stats.jsonl")


def holds_a_run(directory: str) -> bool:
    """Whether `directory` holds files of a run (ours or openai's): logs, options, checkpoints,
    samples. A comparison's launch.log or an empty folder does not count."""
    if not bf.isdir(directory):
        return False
    for name in bf.listdir(directory):
        samples = name.startswith("samples_") and name.endswith(".npz")
        if name in RUN_FILES or checkpoint.parse_filename(name) or samples:
            return True
    return False


def output_dir(run_dir: str, role: str) -> str:
    """Where a non-training entry point writes: `run_dir`, or a fresh `<role>-<time>` subfolder of
    it when it already holds a run, so that no file of that run is rewritten."""
    if not holds_a_run(run_dir):
        return run_dir
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return bf.join(run_dir, f"{role}-{stamp}")


def _agreed(fn, *args):
    """fn(*args) on rank 0, its result or UserError raised on every rank alike (no rank is
    left waiting in a collective for one that failed)."""
    return dist.rank_zero_decides(fn, *args, section=f"run._agreed({fn.__name__})")


SHARED_WAIT_S = 5.0  # how long a rank looks for rank 0's token before calling the run directory unshared


def _make_run_dir(run_dir: str) -> str:
    """Rank 0: create the run directory and, when there are other ranks, a token file in it
    (written under a temporary name and renamed, so no rank reads half of it); the token."""
    try:
        bf.makedirs(run_dir)
    except OSError as e:
        raise UserError(f"{run_dir}: cannot create the run directory ({e.strerror or e})") from None
    if dist.world_size() == 1 or not is_local(run_dir):
        return None  # an object store is one store for every node
    token = secrets.token_hex(16)
    write_text(os.path.join(run_dir, _token_name(token)), token)
    return token


def _token_name(token: str) -> str:
    return f"{TMP_PREFIX}shared-{token}"  # a killed run's leftover goes with the next start's remove_leftovers


def _sees(run_dir: str, token: str) -> bool:
    path = os.path.join(run_dir, _token_name(token))
    try:
        with open(path) as f:
            return f.read() == token
    except OSError:
        return False


def _check_shared(run_dir: str, token) -> None:
    """Every rank: fail alike on every rank, with one line, unless each sees the token file rank 0
    wrote into the run directory. Rank 0 writes every file of a run, and a folder that is not
    the same on every node (a node-local --logdir under a multi-node launch) would leave the
    checkpoints on rank 0's host only: another node could not resume from them, and a requeued
    job that lands rank 0 elsewhere would start over. Collective."""
    if token is None:
        return
    seen = _sees(run_dir, token)
    began = time.monotonic()
    while not seen and time.monotonic() - began < SHARED_WAIT_S:
        # a network file system may answer from its attribute cache for a moment
        time.sleep(0.2)
        seen = _sees(run_dir, token)
    views = dist.all_gather_object((seen, socket.gethostname()))  # every rank has looked: the token may go
    if dist.is_main():
        with dist.rank_zero_only("run: shared-folder token"):
            try:
                os.remove(os.path.join(run_dir, _token_name(token)))
            except OSError:
                pass  # remove_leftovers takes it at the next start
    blind = [(r, host) for r, (ok, host) in enumerate(views) if not ok]
    if blind:
        ranks = ", ".join(f"{r} ({host})" for r, host in blind[:8]) + (" ..." if len(blind) > 8 else "")
        raise UserError(f"{run_dir}: not the same folder on every node: rank(s) {ranks} do not see the file rank 0 "
                        f"({views[0][1]}) wrote there; rank 0 writes the run's checkpoints, so --logdir must be on a "
                        "file system every node mounts")


def setup(family: str, args, logdir=None, stdout=True, resume=None, resume_flag="--resume_checkpoint",
          role="samples") -> Run:
    """Join the process group, create the run directory, write options.json, seed, trap signals.

    A training run passes `resume` (the value of its resume flag, "" for none, see
    `resume_point`): the checkpoint to continue from is found before anything is written, and
    returned as `Run.resume`. Any other entry point leaves `resume` None and names its `role`
    (samples, nll, interpolation...): it writes into `output_dir(run_dir, role)`.

    With `args.tensorboard` (or tensorboard in $OPENAI_LOG_FORMAT) the logger also writes
    TensorBoard event files to `RUN_DIR/tb/`; without the tensorboard package that is a UserError
    raised before anything is written. `args.wandb` (or wandb in $OPENAI_LOG_FORMAT) does the same
    for a Weights & Biases run, with the options as its config.

    Seeds are seed + rank so ranks draw different noise; models built after this differ between
    ranks until `dist.wrap_ddp` broadcasts rank 0's weights, so build EMA copies after wrapping.
    """
    openai_formats = [f.strip() for f in os.environ.get("OPENAI_LOG_FORMAT", "").split(",")]
    tensorboard = ("--tensorboard" if getattr(args, "tensorboard", False) else
                   "tensorboard in $OPENAI_LOG_FORMAT" if "tensorboard" in openai_formats else "")
    if tensorboard:  # before the process group and the run directory: a missing package writes nothing
        require_tensorboard(tensorboard)
    wandb = ("--wandb" if getattr(args, "wandb", False) else
             "wandb in $OPENAI_LOG_FORMAT" if "wandb" in openai_formats else "")
    if wandb:
        require_wandb(wandb)
    dist.init(getattr(args, "dist_timeout", None))
    options = dict(vars(args))
    run_dir = resolve_logdir(family, logdir if logdir is not None else options.get("logdir", ""))
    asked_dir = run_dir
    if resume is None:
        run_dir = _agreed(output_dir, run_dir, role)
    ck = _agreed(resume_point, resume, run_dir, resume_flag) if resume is not None else None
    # A killed run may have left half-written temporaries. A training run (one that passes
    # `resume`) is its directory's only writer, so they can go; the complete files they would
    # have replaced are untouched. Samplers may share a directory with a live run: not them.
    leftovers = 0
    if dist.is_main() and resume is not None:
        with dist.rank_zero_only("run.remove_leftovers"):
            leftovers = remove_leftovers(run_dir)
    # before anything else is written: a folder other nodes do not see fails the start on every rank
    _check_shared(run_dir, _agreed(_make_run_dir, run_dir))
    if dist.is_main():
        with dist.rank_zero_only("run.setup: options.json"):
            record = dict(options)
            record["_run"] = {
                "family": family,
                "role": "train" if resume is not None else role,
                "launcher": dist.launcher(),
                "world_size": dist.world_size(),
                "argv": sys.argv,
                "torch": torch.__version__,
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "deadline": deadline(),
            }
            write_text(bf.join(run_dir, "options.json"),
                       json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    options_path = bf.join(run_dir, "options.json")
    dist.barrier()
    seed_all(int(options.get("seed", 0) or 0) + dist.rank())
    install_signal_handlers()
    logger = Logger(run_dir, stdout=stdout, tensorboard=bool(tensorboard), wandb=bool(wandb), config=options)
    logger.log(f"Logging to {run_dir} ({dist.launcher()}, {dist.world_size()} rank(s), device {dist.device()})")
    if run_dir != asked_dir:
        logger.log(f"{asked_dir} holds another run: writing into {run_dir} (none of that run's files are rewritten)")
    if leftovers:
        logger.log(f"removed {leftovers} temporary file(s) of an interrupted write")
    if ck is None and resume == "auto":
        logger.log(f"no complete checkpoint in {run_dir} yet: starting at step 0")
    return Run(run_dir, logger, options, ck, options_path)


def read_options_file(f: str) -> dict:
    """The parsed options.json `f`; one line naming it when it is not valid JSON or not an
    object of flags (a damaged file is never taken for a missing one)."""
    try:
        with bf.BlobFile(f, "r") as fh:
            options = json.load(fh)
    except json.JSONDecodeError as e:
        raise UserError(f"{f}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{f}: not valid JSON (not UTF-8 text: {e.reason})") from None
    if not isinstance(options, dict):
        raise UserError(f"{f}: not a JSON object of flags (a {type(options).__name__})")
    return options


def options_file(path: str) -> str:
    """The options.json of a run directory, or of the directory of a checkpoint file in it."""
    return bf.join(path if bf.isdir(path) else bf.dirname(path), "options.json")


def load_options(path: str, missing_ok: bool = False) -> dict:
    """The flags saved in a run directory (or in the directory of a checkpoint file). With
    `missing_ok`, {} when there is no options.json (a released checkpoint); a file that is there
    but broken is refused either way."""
    f = options_file(path)
    directory = bf.dirname(f)
    if not bf.exists(f):
        if missing_ok:
            return {}
        raise UserError(f"{directory}: no options.json (not a run directory of this project)")
    options = read_options_file(f)
    options.pop("_run", None)
    for key in RECORDED_KEYS:  # the Task's declarations, not flags
        options.pop(key, None)
    return options



# --- entry points -----------------------------------------------------------------------

def record_exit_status(code: int) -> None:
    """Leave this process's exit status in $TRAINKIT_EXIT_DIR (set by launch/run.sh for
    torchrun's workers), one file per local rank.

    torchrun's agent exits 1 whenever it is signalled itself, even when every worker then
    checkpointed and exited 0; under Slurm it always is (a requeue or a preemption signals every
    process of the job step). run.sh then reports what the workers themselves did. A worker that
    is killed leaves no file and counts as failed."""
    folder = os.environ.get("TRAINKIT_EXIT_DIR")
    if not folder:
        return
    try:
        with open(os.path.join(folder, f"local_rank{os.environ.get('LOCAL_RANK', '0')}"), "w") as f:
            f.write(f"{code}\n")
    except OSError:
        pass  # run.sh counts a worker without a file as failed: the agent's own status stands


def main(fn):
    """Wrap an entry point: a UserError becomes `module: error: message` and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        prog = program_name() if fn.__module__ == "__main__" else fn.__module__
        try:
            result = fn(*args, **kwargs)
            dist.shutdown(wait_for_peers=True)
            record_exit_status(0)
            return result
        except UserError as e:
            sys.stdout.flush()
            print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
            code = 2
            # under mpiexec a failed rank would wait in MPI_Finalize for peers that wait for it;
            # before the group is torn down, which can itself fail with a peer gone
            dist.abort_mpi(code)
        except Exception as e:
            # a rank that lost a peer says so in one line; any other failure keeps its traceback
            lost, code = dist.peer_failure(e), 1
            sys.stdout.flush()
            if lost:
                print(f"{prog}: error: {lost}", file=sys.stderr, flush=True)
            else:
                traceback.print_exc()
                sys.stderr.flush()
            dist.abort_mpi(code)
        finally:
            dist.shutdown()
        record_exit_status(code)
        sys.exit(code)

    return wrapper
