"""Sampling that gives the same npz whatever the number of ranks or the batch size.

Every sample index i owns a random generator seeded from (seed, i), and every random draw a
sampler makes for that sample (initial noise, per-step noise, latent z, a random label) comes
from it. Which rank draws sample i, and next to which other samples, then no longer matters.
Generators live on the CPU so a CPU run and a GPU run of the same seed start from the same
noise; the draws are moved to the device afterwards.
"""

import json
import os
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from . import dist, fileio, npz
from .errors import UserError

# rank 0's record of how far a sampling is, in its output folder (see SamplingProgress)
PROGRESS_FILE = "sampling_progress.json"


def sample_seed(seed: int, index: int) -> int:
    # shift the Python int: numpy 1.x turns np.uint64 >> int into float64 and refuses the shift
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(1, np.uint64)[0]) >> 1


class PerSampleRandom:
    """One generator per sample index; each draw returns a batch stacked in index order."""

    def __init__(self, seed: int, indices, device=None):
        self.indices = [int(i) for i in indices]
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, i)) for i in self.indices]

    def __len__(self):
        return len(self.indices)

    def _stack(self, draw):
        return torch.stack([draw(g) for g in self.generators]).to(self.device)

    def randn(self, *shape) -> torch.Tensor:
        return self._stack(lambda g: torch.randn(shape, generator=g))

    def rand(self, *shape) -> torch.Tensor:
        return self._stack(lambda g: torch.rand(shape, generator=g))

    def randint(self, high: int, *shape) -> torch.Tensor:
        return self._stack(lambda g: torch.randint(high, shape, generator=g))


def rank_indices(num_samples: int, block: int = 1) -> list:
    """This rank's sample indices, ascending: blocks of `block` consecutive indices dealt out
    to the ranks in turn (block 1: i % world == rank)."""
    blocks = range(dist.rank(), -(-num_samples // block), dist.world_size())
    return [i for b in blocks for i in range(b * block, min((b + 1) * block, num_samples))]


class SamplingProgress:
    """`PROGRESS_FILE` in the output folder: `{"samples_done", "samples_total", "started" (unix
    time), "seconds" (since then)}`, rewritten atomically after every batch, so that a job watching
    the folder (evaluations.compare) can show how far the sampling is and when it will end; tqdm's
    bar goes to a terminal or a log nobody parses. Only rank 0 writes it, and only if no file of that
    name was there before (created with O_EXCL): a record of another run is never overwritten, and
    this sampling then goes unrecorded. Remote folders get none: a round trip to the object store
    per batch buys nothing there, the main job's stages are local."""

    def __init__(self, out_dir: str, total: int):
        self.total = int(total)
        self.started, self._t0 = time.time(), time.monotonic()
        self.path = None
        if not fileio.is_local(out_dir):
            return
        path = os.path.join(out_dir, PROGRESS_FILE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            print(f"{path}: exists (not this run's); this sampling's progress is not recorded", file=sys.stderr)
            return
        except OSError as e:
            raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
        # a reader may catch this first write half-done: read_progress takes that for no record yet
        with os.fdopen(fd, "w") as f:
            f.write(self._text(0))
        self.path = path

    def __bool__(self):
        return self.path is not None

    def _text(self, done: int) -> str:
        return json.dumps({"samples_done": int(done), "samples_total": self.total, "started": self.started,
                           "seconds": round(time.monotonic() - self._t0, 3)}) + "\n"

    def update(self, done: int):
        if self.path is None:
            return
        with fileio.atomic_path(self.path) as tmp, open(tmp, "w") as f:
            f.write(self._text(done))


def read_progress(directory: str):
    """The `PROGRESS_FILE` record in `directory` as a dict, or None when there is none (yet) or it
    is not one (a first write caught half-done)."""
    try:
        with open(os.path.join(directory, PROGRESS_FILE)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    keys = ("samples_done", "samples_total", "started", "seconds")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), (int, float)) for k in keys):
        return None
    return record


def sample_to_npz(sample_fn, num_samples: int, batch_size: int, seed: int, out_dir: str,
                  device=None, desc: str = "sampling", block: int = 1, info=None):
    """Run `sample_fn(rnd, indices) -> (uint8 N,H,W,C, labels or None)` over this rank's share of
    the indices (`rank_indices(num_samples, block)`), gather everything on rank 0 in index order
    and write one npz there, with `info` (what the sampler did: trainkit.npz.write_samples) as its
    json beside it; rank 0 keeps `PROGRESS_FILE` in `out_dir` up to date after every batch
    (SamplingProgress). Collective; returns the npz path on every rank."""
    device = dist.device() if device is None else device
    mine = rank_indices(num_samples, block)
    parts = []
    # Rank 0's progress stands for everyone's (its share is the largest).
    bar = tqdm(total=num_samples, desc=desc, disable=not dist.is_main(), unit="img")
    record = None
    if dist.is_main():
        with dist.rank_zero_only("sampling: progress file"):
            record = SamplingProgress(out_dir, num_samples)
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        images, labels = sample_fn(PerSampleRandom(seed, chunk, device), chunk)
        parts.append((chunk, np.asarray(images), None if labels is None else np.asarray(labels)))
        bar.update(min(len(chunk) * dist.world_size(), num_samples - bar.n))
        if record:  # rank 0's alone
            with dist.rank_zero_only("sampling: progress file"):
                record.update(bar.n)
    bar.close()
    gathered = dist.gather_object(parts)
    path = None
    if dist.is_main():
        with dist.rank_zero_only("sampling: rank 0 writes the samples"):
            everything = [p for rank_parts in gathered for p in rank_parts]
            order = np.argsort(np.concatenate([np.asarray(c, dtype=np.int64) for c, _, _ in everything]))
            images = np.concatenate([im for _, im, _ in everything])[order]
            labels = None
            if everything and everything[0][2] is not None:
                labels = np.concatenate([lb for _, _, lb in everything])[order]
            path = npz.write_samples(out_dir, images, labels, info=info)
    return dist.broadcast_object(path)
