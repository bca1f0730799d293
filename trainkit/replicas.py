"""The replicas check: every rank holds the same parameters before a checkpoint is written."""

import torch

from . import dist


def parameter_fingerprint(modules: dict) -> list:
    """Per parameter tensor: its float64 sum and sum of squares; equal weights give equal bits."""
    parts = []
    with torch.no_grad():
        for name in sorted(modules):
            for p in modules[name].parameters():
                d = p.detach().double()
                parts.append(torch.stack([d.sum(), d.square().sum()]))
    return torch.stack(parts).cpu().flatten().tolist() if parts else []


def check_consistency(modules: dict, step: int) -> None:
    """Every rank holds the same parameters (collective). A difference is a broken gradient sync
    or a rank that loaded other weights: fail before one rank's copy is checkpointed."""
    if dist.world_size() == 1:
        return
    prints = dist.all_gather_object(parameter_fingerprint(modules))
    differ = [r for r, f in enumerate(prints) if f != prints[0]]
    if differ:
        raise RuntimeError(f"step {step}: rank(s) {differ} hold parameters that differ from rank 0's "
                           f"({', '.join(sorted(modules))}); the replicas are out of sync")
