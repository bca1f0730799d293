"""Checkpoints with openai's file names, written atomically, loaded without running code.

A step's checkpoint is several files in the run directory: `model%06d.pt`, `ema_{rate}_%06d.pt`,
`opt%06d.pt` (openai's names, so their tools and ours read each other's run directories), any
family-specific ones, and `state%06d.pt`, the trainer state (step, RNG states, data position,
loss scale...). The state file is written last and records the size of every other file of the
step, so it is the step's completion record: `latest()` returns the newest step whose state file
loads and whose other files are all there at their recorded size. A kill at any moment therefore
leaves either a complete step or one that is ignored, never one that is half-trusted.

A directory written by openai's code has model/ema/opt files and no state file (and no
options.json): its newest model step is its latest checkpoint, with `state` None. A run that
continues such a folder in place adopts that step (`adopt`: a state file is added, openai's
files are left as they are). In a directory of ours, step files without a state file are the
leftovers of an interrupted write.

Only a damaged file makes a step "incomplete" (a missing file, a size other than recorded, a
file that is not a readable torch archive); an I/O or permission error is reported with the
file's name, never taken as a reason to fall back to an older step.

Loading uses `torch.load(weights_only=True)`: a checkpoint holds tensors and plain containers,
and a pickle that would run code is refused with a one-line error.
"""

import errno
import os
import pickle
import re

import blobfile as bf
import torch

from . import dist, ema
from .errors import UserError
from .fileio import atomic_path, is_local

STATE_PREFIX = "state"
OPTIONS = "options.json"  # written by trainkit.run.setup in every run directory of ours
_NAME = re.compile(r"^(?P<prefix>.*?)(?P<step>\d{6,})\.pt$")


def filename(prefix: str, step: int) -> str:
    return f"{prefix}{step:06d}.pt"


def parse_filename(name: str):
    """('model', 1200) for 'model001200.pt'; None for a name that is not a step file."""
    m = _NAME.match(os.path.basename(name))
    return (m["prefix"], int(m["step"])) if m else None


class Unreadable(UserError):
    """A file that exists but is not a readable checkpoint (truncated, garbage, not torch's)."""


def _reason(e) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load(path):
    """Load a checkpoint file onto the CPU. A file that is not a checkpoint raises `Unreadable`;
    one that cannot be read (permissions, I/O) a UserError that says so. Both name the file."""
    path = str(path)
    if not bf.exists(path):
        raise UserError(f"{path}: no such checkpoint file")
    try:
        with bf.BlobFile(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except OSError as e:  # the file is there but reading it failed: not a damaged checkpoint
        raise UserError(f"{path}: cannot read ({e.strerror or _reason(e)})") from None
    except pickle.UnpicklingError as e:
        # torch refused a pickle that names a function to call on load: "unsupported GLOBAL ..."
        # since torch 2.4, "Unsupported class ..." before
        if "GLOBAL" in str(e) or "Unsupported class" in str(e):
            raise Unreadable(f"{path}: refused: not a plain tensor checkpoint (loading it would run code)") from None
        raise Unreadable(f"{path}: not a readable checkpoint (not a torch file)") from None
    except Exception as e:  # the unpickler raises many types on garbage; all mean the same here
        raise Unreadable(f"{path}: not a readable checkpoint ({_reason(e)})") from None


def flag_contradictions(flags: dict, known: dict, where: str) -> list:
    """'--k V, but WHERE has W' for each flag of `known` (what the checkpoint is known to have
    been trained with) that `flags` sets to another value: the cause to name first when the
    weights then do not fit, rather than only the tensors that disagree."""
    return [f"--{k} {flags[k]}, but {where} has {v}" for k, v in known.items() if k in flags and flags[k] != v]


def saved_flag_contradictions(model_path: str, flags: dict, keys) -> list:
    """flag_contradictions of the model flags `flags` (only `keys`, None meaning "not given")
    against the options.json of the run `model_path` belongs to (a run directory or a file in
    one); [] where there is none (a released file). The one check every sampler, interpolation
    and export makes before loading weights, so that a misfit names the flag first."""
    from . import run  # here: trainkit.run imports this module

    keys = set(keys)
    path = str(model_path).rstrip("/")
    saved = {k: v for k, v in run.load_options(path, missing_ok=True).items() if k in keys}
    given = {k: v for k, v in flags.items() if k in keys and v is not None}
    return flag_contradictions(given, saved, run.options_file(path))


WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel's, torch.compile's


def strip_wrapper_prefixes(state_dict):
    """`state_dict` without the key prefixes a wrapper adds when one is saved instead of the
    network (DDP's `module.`, torch.compile's `_orig_mod.`, in either nesting): our trainers save
    the bare network, this reads what other code saved from a wrapper."""
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def checked_state_dict(module, state_dict, source, what="model", hint="", contradictions=()):
    """`state_dict` if it fits `module` key for key and shape, else one UserError line naming
    `source` and the missing, unexpected and mis-shaped keys, after the flags that contradict
    the checkpoint (`contradictions`, from flag_contradictions) when there are any. A state_dict
    saved from DistributedDataParallel (every key prefixed `module.`) is accepted, and returned
    unprefixed."""
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise UserError(f"{source}: not a {what} state_dict")
    state_dict = strip_wrapper_prefixes(state_dict)
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("shape (checkpoint vs flags)", shapes)):
            if items:
                more = f" (+{len(items) - 6} more)" if len(items) > 6 else ""
                parts.append(f"{label}: {', '.join(items[:6])}{more}")
        if contradictions:
            raise UserError(f"{source}: {what} weights do not fit the model built from the flags: "
                            f"{'; '.join(contradictions)} ({'; '.join(parts)})")
        raise UserError(f"{source}: {what} weights do not fit the model built from the flags"
                        f"{' (' + hint + ')' if hint else ''}: {'; '.join(parts)}")
    return state_dict


def load_into(module, state_dict, source, what="model", hint="", contradictions=()):
    """`module.load_state_dict(..., strict=True)` after `checked_state_dict`: a checkpoint that
    does not fit is one line naming the file and the keys, never torch's multi-line error."""
    module.load_state_dict(checked_state_dict(module, state_dict, source, what, hint, contradictions), strict=True)
    return module


def load_optimizer(optimizer, state_dict, source):
    """`optimizer.load_state_dict`, with a state of another model as one line naming `source`."""
    try:
        optimizer.load_state_dict(state_dict)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{source}: optimizer state does not fit this model ({_reason(e)})") from None


def _torch_save(obj, path):
    try:
        torch.save(obj, path)
    except RuntimeError as e:
        # torch's zip writer reports a failed write (full disk, quota, file-size limit) as a
        # RuntimeError; as an OSError, atomic_path removes the temporary and names the file.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "write failed"
        raise OSError(errno.EIO, f"{reason}; is the disk full?") from None


def save(run_dir: str, step: int, states: dict, trainer_state: dict) -> None:
    """Write every state under its prefix, then the trainer state. Call on every rank.

    A complete step is never rewritten (nor a step of openai's in a folder this run did not
    adopt): that raises a UserError naming the step before any file is touched."""
    if dist.is_main():
        with dist.rank_zero_only("checkpoint.save"):
            _refuse_overwrite(run_dir, step)
            sizes = {}
            for prefix, obj in states.items():
                path = bf.join(run_dir, filename(prefix, step))
                with atomic_path(path) as tmp:
                    _torch_save(obj, tmp)
                    sizes[prefix] = os.path.getsize(tmp)
            record = dict(trainer_state)
            record["step"] = int(step)
            record["files"] = sizes
            with atomic_path(bf.join(run_dir, filename(STATE_PREFIX, step))) as tmp:
                _torch_save(record, tmp)
    dist.barrier()


def _refuse_overwrite(run_dir, step):
    if not bf.isdir(run_dir):
        return
    if _complete(run_dir, step) is not None:
        raise UserError(f"{bf.join(run_dir, filename(STATE_PREFIX, step))}: step {step} is already a complete "
                        "checkpoint of this directory; not overwriting it")
    if is_openai_layout(run_dir) and _files_of_step(run_dir, step):
        raise UserError(f"{run_dir}: step {step} holds files written by other code; not overwriting them")


def adopt(ck):
    """Make a step without a state file (openai's model/ema/opt) a complete step of its folder by
    writing only its state file, recording the files' sizes; the files themselves are untouched.
    Returns the Checkpoint with that state (no RNG or data position: the loop re-derives them)."""
    sizes = {prefix: _size(bf.join(ck.dir, name)) for prefix, name in ck.files.items()}
    record = {"step": int(ck.step), "files": sizes, "origin": "adopted (no trainer state)"}
    with atomic_path(bf.join(ck.dir, filename(STATE_PREFIX, ck.step))) as tmp:
        _torch_save(record, tmp)
    return Checkpoint(ck.dir, ck.step, dict(ck.files), record)


def sampling_weights(ck) -> str:
    """The prefix of the state_dict to sample `ck` with, one rule for every sampler, probe,
    interpolation and export: the `sample_weights` the training loop recorded in the state file
    (when the step has that file), else the settled fixed-rate EMA among the step's files
    (trainkit.ema.settled_rate: its share of the initial weights is under 1%), else "model"."""
    recorded = (ck.state or {}).get("sample_weights")
    if recorded and ck.has(recorded):
        return recorded
    rates = ema.rates_in(ck.prefixes())
    rate = ema.settled_rate(rates, ck.step)
    return rates[rate] if rate is not None else "model"


class Checkpoint:
    """The files of one step in one directory. `state` is the trainer state, or None for a
    directory written by openai's code (model/ema/opt files only)."""

    def __init__(self, dir: str, step: int, files: dict, state=None):
        self.dir = dir
        self.step = step
        self.files = files
        self.state = state

    def has(self, prefix: str) -> bool:
        return prefix in self.files

    def path(self, prefix: str) -> str:
        if prefix not in self.files:
            raise UserError(f"{bf.join(self.dir, filename(prefix, self.step))}: missing from the checkpoint "
                            f"of step {self.step}")
        return bf.join(self.dir, self.files[prefix])

    def load(self, prefix: str):
        return load(self.path(prefix))

    def prefixes(self) -> list:
        return sorted(self.files)

    def __repr__(self):
        return f"Checkpoint({self.dir!r}, step={self.step}, files={sorted(self.files)})"


def _size(path):
    """The file's size, None when it does not exist; an I/O error is one line naming it."""
    try:
        return bf.stat(path).size
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or _reason(e)})") from None


def _complete(dir: str, step: int):
    """The Checkpoint of `step` if its state file loads and every recorded file is intact.

    A missing or damaged file means "incomplete" (None); any other failure to read is raised."""
    state_path = bf.join(dir, filename(STATE_PREFIX, step))
    if _size(state_path) is None:
        return None
    try:
        state = load(state_path)
    except Unreadable:
        return None
    if not isinstance(state, dict) or not isinstance(state.get("files"), dict):
        return None
    files = {}
    for prefix, size in state["files"].items():
        name = filename(prefix, step)
        if _size(bf.join(dir, name)) != size:
            return None
        files[prefix] = name
    return Checkpoint(dir, step, files, state)


def _listing(run_dir: str) -> list:
    """(prefix, step) of every step file in `run_dir`."""
    if not bf.isdir(run_dir):
        return []
    return [p for p in (parse_filename(n) for n in bf.listdir(run_dir)) if p]


def _files_of_step(dir: str, step: int) -> dict:
    return {prefix: filename(prefix, s) for prefix, s in _listing(dir) if s == step}


def state_steps(run_dir: str) -> list:
    """Steps that have a state file, newest first (complete or not)."""
    return sorted({s for p, s in _listing(run_dir) if p == STATE_PREFIX}, reverse=True)


def is_openai_layout(run_dir: str) -> bool:
    """model%06d.pt files, no state file and no options.json: a folder written by openai's code."""
    listing = _listing(run_dir)
    return (any(p == "model" for p, _ in listing) and not any(p == STATE_PREFIX for p, _ in listing)
            and not bf.exists(bf.join(run_dir, OPTIONS)))


def steps(run_dir: str) -> list:
    """Steps that have any checkpoint file (a state file, or openai's model files), newest first."""
    return sorted({s for p, s in _listing(run_dir) if p in (STATE_PREFIX, "model")}, reverse=True)


def _openai_step(dir: str, step: int):
    """The Checkpoint of an openai step if its model file is a readable torch archive."""
    files = _files_of_step(dir, step)
    path = bf.join(dir, files["model"])
    try:
        if is_local(path):  # mmap: only the archive's index is read, not the weights
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        else:
            load(path)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or _reason(e)})") from None
    except Unreadable:
        return None
    except Exception:  # torch's own errors for a damaged archive (local path)
        return None
    return Checkpoint(dir, step, files, None)


def latest(run_dir: str):
    """The newest complete checkpoint in `run_dir` (openai's newest readable model step in a
    folder of openai's), or None."""
    if is_openai_layout(run_dir):
        for step in sorted({s for p, s in _listing(run_dir) if p == "model"}, reverse=True):
            ck = _openai_step(run_dir, step)
            if ck is not None:
                return ck
        return None
    for step in state_steps(run_dir):
        ck = _complete(run_dir, step)
        if ck is not None:
            return ck
    return None


def resolve(path: str) -> Checkpoint:
    """A run directory (its latest complete step) or any file of one step, e.g. model001200.pt.

    A step without a state file (a run directory written by openai's code, or a released
    checkpoint) is still accepted: its files are found by name and `state` is None.
    """
    path = str(path).rstrip("/")
    if not path:
        raise UserError("empty checkpoint path")
    if bf.isdir(path):
        ck = latest(path)
        if ck is None:
            raise UserError(f"{path}: no complete checkpoint in this directory")
        return ck
    if not bf.exists(path):
        raise UserError(f"{path}: no such checkpoint file or run directory")
    parsed = parse_filename(path)
    dir = bf.dirname(path)
    if parsed is None:
        # A single file with a free-form name (e.g. a released model): a step-less checkpoint.
        return Checkpoint(dir, 0, {"model": bf.basename(path)})
    prefix, step = parsed
    ck = _complete(dir, step)
    if ck is not None:
        return ck
    if bf.exists(bf.join(dir, filename(STATE_PREFIX, step))):
        raise UserError(f"{path}: the checkpoint of step {step} is incomplete or corrupt")
    return Checkpoint(dir, step, _files_of_step(dir, step), None)
