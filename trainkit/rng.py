"""Random streams: seeding every generator a run draws from, and saving / restoring each
rank's states in a checkpoint (bit-exact resume), or deriving fresh ones on another world size."""

import random

import numpy as np
import torch

from . import dist


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reseed(seed: int, step: int) -> None:
    """Fresh random streams for a run that cannot restore its ranks' RNG states (resumed on
    another number of ranks): derived from (seed, step, rank), so they are reproducible and no
    two ranks share one."""
    mixed = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step), dist.rank()]).generate_state(1)[0]
    seed_all(int(mixed))



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
    """Restore this rank's entry of `rng_state()`'s list (weights_only-loadable). The list must
    hold one entry per rank: on another world size, `reseed` derives fresh streams instead (a
    rank must never reuse another rank's stream)."""
    if len(states) != dist.world_size():
        raise ValueError(f"RNG states of {len(states)} ranks cannot be restored on {dist.world_size()}")
    s = states[dist.rank()]
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])
