"""openai's `improved_diffusion.dist_util` API, on trainkit.dist.

`setup_dist()`, `dev()`, `load_state_dict(path, **kwargs)` and `sync_params(params)` keep
openai's names and signatures, so code written against openai's package runs unchanged, but
under any launcher: a plain process (no MPI needed), `mpiexec -n N` or `torchrun`
(trainkit.dist.init works out which). Each rank gets its own GPU (`cuda:LOCAL_RANK`), where
openai's hard-coded GPUS_PER_NODE picked one.

A plain process gets a process group of one rank (over an in-memory store: no network, no
port), because openai's scripts call torch.distributed directly after setup_dist
(`dist.get_world_size()`, `dist.all_gather`, `dist.barrier`) and those need a group.
"""

import io

import blobfile as bf
import torch
import torch.distributed as td

from trainkit import dist
from trainkit.errors import UserError


def setup_dist():
    """Join the process group of whatever launcher started this process. Safe to call twice.
    A single process gets a group of one rank: openai's callers use torch.distributed directly."""
    dist.init(group_of_one=True)


def dev():
    """The device this rank computes on: its GPU, or the CPU."""
    return dist.device()


def load_state_dict(path, **kwargs):
    """torch.load of `path` (a local file or a blobfile URL), read once on rank 0 and sent to
    the other ranks. `kwargs` go to torch.load (e.g. map_location="cpu"). A file that cannot be
    read is a UserError on every rank. Collective when there is more than one rank."""
    data = error = None
    if dist.rank() == 0:
        with dist.rank_zero_only("dist_util: read file"):
            try:
                with bf.BlobFile(path, "rb") as f:
                    data = f.read()
            except OSError as e:  # told to every rank, so that none waits for bytes that never come
                error = f"{path}: cannot read ({e.strerror or e})"
    if dist.world_size() > 1:
        data, error = dist.broadcast_object((data, error))
    if error:
        raise UserError(error)
    return torch.load(io.BytesIO(data), **kwargs)


def sync_params(params):
    """Copy rank 0's values of a sequence of tensors to every rank (in place). Collective."""
    if dist.world_size() == 1:
        return
    for p in params:
        with torch.no_grad():
            td.broadcast(p, 0)
