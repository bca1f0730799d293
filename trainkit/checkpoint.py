"""Checkpoints with openai's file names, written atomically, loaded without running code.

A step's checkpoint is several files in the run directory: `model%06d.pt`, `ema_{rate}_%06d.pt`,
`opt%06d.pt` (openai's names, so their tools and ours read each other's run directories), any
family-specific ones, and `state%06d.pt`, the trainer state (step, RNG states, data position,
loss scale...). The state file is written last and records the size of every other file of the
step, so it is the step's completion record: `latest()` returns the newest step whose state file
loads and whose other files are all there at their recorded size. A kill at any moment therefore
leaves either a complete step or one that is ignored, never one that is half-trusted.

Loading uses `torch.load(weights_only=True)`: a checkpoint holds tensors and plain containers,
and a pickle that would run code is refused with a one-line error.
"""

import errno
import os
import pickle
import re

import blobfile as bf
import torch

from . import dist
from .errors import UserError
from .fileio import atomic_path

STATE_PREFIX = "state"
_NAME = re.compile(r"^(?P<prefix>.*?)(?P<step>\d{6,})\.pt$")


def filename(prefix: str, step: int) -> str:
    return f"{prefix}{step:06d}.pt"


def parse_filename(name: str):
    """('model', 1200) for 'model001200.pt'; None for a name that is not a step file."""
    m = _NAME.match(os.path.basename(name))
    return (m["prefix"], int(m["step"])) if m else None


def load(path):
    """Load a checkpoint file onto the CPU; one-line UserError naming the file when it is not one."""
    path = str(path)
    if not bf.exists(path):
        raise UserError(f"{path}: no such checkpoint file")
    try:
        with bf.BlobFile(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # torch refused a pickle that names a function to call on load
            raise UserError(f"{path}: refused: not a plain tensor checkpoint (loading it would run code)") from None
        raise UserError(f"{path}: not a readable checkpoint (not a torch file)") from None
    except Exception as e:  # the unpickler raises many types on garbage; all mean the same here
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable checkpoint ({reason})") from None


def _torch_save(obj, path):
    try:
        torch.save(obj, path)
    except RuntimeError as e:
        # torch's zip writer reports a failed write (full disk, quota, file-size limit) as a
        # RuntimeError; as an OSError, atomic_path removes the temporary and names the file.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "write failed"
        raise OSError(errno.EIO, f"{reason}; is the disk full?") from None


def save(run_dir: str, step: int, states: dict, trainer_state: dict) -> None:
    """Write every state under its prefix, then the trainer state. Call on every rank."""
    if dist.is_main():
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
            raise UserError(f"{bf.join(self.dir, filename(prefix, self.step))}: missing from the checkpoint of step {self.step}")
        return bf.join(self.dir, self.files[prefix])

    def load(self, prefix: str):
        return load(self.path(prefix))

    def prefixes(self) -> list:
        return sorted(self.files)

    def __repr__(self):
        return f"Checkpoint({self.dir!r}, step={self.step}, files={sorted(self.files)})"


def _size(path):
    try:
        return bf.stat(path).size
    except (FileNotFoundError, OSError):
        return None


def _complete(dir: str, step: int):
    """The Checkpoint of `step` if its state file loads and every recorded file is intact."""
    state_path = bf.join(dir, filename(STATE_PREFIX, step))
    try:
        state = load(state_path)
    except UserError:
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


def steps(run_dir: str) -> list:
    """Steps that have a state file, newest first (complete or not)."""
    if not bf.isdir(run_dir):
        return []
    found = {parse_filename(n) for n in bf.listdir(run_dir)}
    return sorted({s for p in found if p and p[0] == STATE_PREFIX for s in [p[1]]}, reverse=True)


def latest(run_dir: str):
    """The newest complete checkpoint in `run_dir`, or None."""
    for step in steps(run_dir):
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
    files = {}
    for name in bf.listdir(dir):
        p = parse_filename(name)
        if p and p[1] == step:
            files[p[0]] = name
    return Checkpoint(dir, step, files, None)
