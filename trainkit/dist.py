"""One process group for every launcher: a plain process, `mpiexec -n N`, or `torchrun`.

`init()` works out who started us from the environment:

- torchrun (and Slurm scripts that export the same names): RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT are already set; we join with `env://`.
- mpiexec with more than one rank: trainkit.mpi_world fills torchrun's variables from the MPI
  world (rank 0 decides the rendezvous address, a free port and the shared TRAINKIT_*
  variables), then everyone joins the same `env://` group. `abort_mpi` (mpi_world's, named here
  for run.main) ends the world after a rank failed.
- RANK and WORLD_SIZE without LOCAL_RANK (a hand-written srun line): the local rank is Slurm's
  SLURM_LOCALID, or the MPI launcher's.
- otherwise a single process: no process group is created and every collective below is a
  no-op, so a laptop run needs no network at all.

The group's timeout makes a rank that waits on a dead peer fail instead of hanging forever.
"""

import contextlib
import datetime
import inspect
import os
import socket

import torch
import torch.distributed as td

from . import mpi_world
from .errors import UserError
from .mpi_world import abort_mpi  # noqa: F401 (re-export)

DEFAULT_TIMEOUT_S = 1800.0
# where a launcher that does not set LOCAL_RANK says it, first match wins
_LOCAL_RANK_VARS = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK")
# torch >= 2.3 binds a group to one device at init (eager NCCL init on this rank's GPU)
_INIT_TAKES_DEVICE_ID = "device_id" in inspect.signature(td.init_process_group).parameters


def launcher() -> str:
    """'torchrun', 'mpi' or 'local', judged from the environment alone."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun"
    if mpi_world.launched_by_mpi():
        return "mpi"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return "torchrun"  # same variables exported by hand or by a Slurm script
    return "local"


def _timeout_seconds(timeout_s):
    if timeout_s is None:
        timeout_s = float(os.environ.get("TRAINKIT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    return float(timeout_s)


# what gloo, NCCL and the store say when a peer rank, its host or the link to it is gone
_PEER_LOST = ("connection closed by peer", "connection reset by peer", "gloo/transport", "broken pipe",
              "nccl communicator was aborted")


def peer_failure(exc: BaseException):
    """One line for an exception that says this rank lost a peer (a rank that died, its host, the
    network between them, or a collective timeout), else None: such a rank has nothing of its own
    to report, and its traceback from inside a collective would bury the failing rank's message."""
    if not isinstance(exc, RuntimeError) or not td.is_initialized():
        return None
    text = str(exc)
    if not isinstance(exc, td.DistError) and not any(k in text.lower() for k in _PEER_LOST):  # gloo: RuntimeError
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    first = first.split(" This is typically")[0]  # gloo's advice that follows is addressed to torch's users
    return (f"rank {rank()} of {world_size()} ({socket.gethostname()}) lost contact with another rank: {first[:300]}; "
            "a rank, its host or the network between them failed (or the collective timed out, see --dist_timeout); "
            "resume with --resume_checkpoint auto")


def init(timeout_s=None, group_of_one=False) -> None:
    """Join the process group of whatever launcher started us. Safe to call twice.

    A single process gets no group (every helper here answers for one rank without one), unless
    `group_of_one`: then a one-rank group over an in-memory store (no network, no port), for
    callers that use torch.distributed directly, as openai's scripts do after setup_dist."""
    if td.is_initialized():
        return
    _join(timeout_s)
    if group_of_one and not td.is_initialized():
        td.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", store=td.HashStore(),
                              rank=0, world_size=1)


def _join(timeout_s) -> None:
    kind = launcher()
    if kind == "mpi":
        if not mpi_world.env_from_mpi():
            kind = "local"
        else:
            # torch sized its thread pool at import; use the count the launcher (or mpi_world.env_from_mpi) chose
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if kind == "torchrun" and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(local_rank())  # a hand-written srun line: Slurm's, or MPI's
    if kind == "local" or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        if torch.cuda.is_available():
            torch.cuda.set_device(0)
        return
    extra = {}
    if torch.cuda.is_available():
        index = _device_index()  # the same index device() answers, checked against the GPUs seen
        torch.cuda.set_device(index)
        if _INIT_TAKES_DEVICE_ID:
            # binds the NCCL communicator to this rank's GPU at init (no guess from the rank)
            extra["device_id"] = torch.device("cuda", index)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        _nccl_env()
    timeout = datetime.timedelta(seconds=_timeout_seconds(timeout_s))
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if restart not in ("", "0"):
        # torchrun --max-restarts: the agent's store outlives the failed attempt, and the
        # addresses its dead workers published there would be read again (gloo then fails with
        # "connection refused"). A key prefix per attempt keeps each attempt's group apart.
        store, rank_, size = next(td.rendezvous("env://", timeout=timeout))
        td.init_process_group(backend=backend, store=td.PrefixStore(f"trainkit/attempt{restart}", store),
                              rank=rank_, world_size=size, timeout=timeout, **extra)
        return
    td.init_process_group(backend=backend, init_method="env://", timeout=timeout, **extra)


def _nccl_env() -> None:
    """NCCL's failure semantics, set before its group exists. Without async error handling a
    collective that fails or hangs (a dead or stuck peer) blocks this rank until NCCL's watchdog
    aborts the process (its own timeout, 30 min by default) with no one-line error; with it, the
    collective raises once the group's timeout (--dist_timeout) has passed, and run.main reports
    it like gloo's. A value the user set is kept."""
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")


def is_initialized() -> bool:
    return td.is_initialized()


def rank() -> int:
    return td.get_rank() if td.is_initialized() else 0


def world_size() -> int:
    return td.get_world_size() if td.is_initialized() else 1


def local_rank() -> int:
    for var in _LOCAL_RANK_VARS:
        if os.environ.get(var, "") != "":
            return int(os.environ[var])
    return 0


def is_main() -> bool:
    return rank() == 0


# where a launcher says how many ranks run on this node, first match wins
_LOCAL_SIZE_VARS = ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


def local_world_size():
    """(ranks on this node, the variable that said so), or (None, None) when no launcher said."""
    for var in _LOCAL_SIZE_VARS:
        value = os.environ.get(var, "")
        digits = value.split("(")[0].split(",")[0]  # Slurm may write "2(x3)" or "2,1" per node
        if digits.isdigit():
            return int(digits), var
    return None, None


def _device_index() -> int:
    """This rank's GPU among those it sees: the one index both set_device and device() use.

    A rank that sees exactly one GPU uses it (a launcher gave each rank its own through
    CUDA_VISIBLE_DEVICES, as srun --gpus-per-task=1 does, or the node has one GPU and one
    rank); otherwise the local rank picks one. More ranks on a node than GPUs is a UserError:
    two ranks on one GPU fail inside NCCL, or run with one rank's GPU missing."""
    count = torch.cuda.device_count()
    size, var = local_world_size()
    if count == 1 and (size in (None, 1) or os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()):
        return 0
    lr = local_rank()
    if (size is not None and size > count) or lr >= count:
        ranks = f"{size} ranks on this node ({var})" if size is not None and size > count else f"local rank {lr}"
        raise UserError(f"{ranks} but torch.cuda.device_count() is {count}: start at most {count} rank(s) per node "
                        f"(e.g. --nproc {count}) or give each rank its own GPU (CUDA_VISIBLE_DEVICES)")
    return lr


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", _device_index())
    return torch.device("cpu")


def _collective_device() -> torch.device:
    # gloo reduces CPU tensors; nccl only CUDA ones.
    if td.is_initialized() and td.get_backend() == "nccl":
        return device()
    return torch.device("cpu")


# ----- rank-0-only sections ------------------------------------------------------------------
# A collective issued by one rank waits for peers that never issue it (or that are inside
# another collective: DDP's all-reduce), a hang until --dist_timeout. Code that runs on rank 0
# alone marks itself with `rank_zero_only()`; inside it every collective below raises at once.

GUARD_ENV = "TRAINKIT_COLLECTIVE_GUARD"  # "1": enforce even without a group, and guard torch.distributed too
_refusing = None  # a section's name while a collective must raise (the one check each collective makes)
_TD_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "all_to_all",
                   "all_to_all_single", "barrier", "broadcast", "broadcast_object_list", "gather", "gather_object",
                   "reduce", "reduce_scatter", "reduce_scatter_tensor", "scatter", "scatter_object_list",
                   "monitored_barrier")


def _refuse(collective: str):
    raise RuntimeError(f"collective {collective} called inside the rank-0-only section '{_refusing}': "
                       "the other ranks never join it (a hang until --dist_timeout); call it on every rank "
                       "before the section")


def _check(collective: str) -> None:
    if _refusing is not None:
        _refuse(collective)


@contextlib.contextmanager
def rank_zero_only(section: str = "rank 0"):
    """Marks code that runs on one rank. Inside it, trainkit.dist's collectives raise (when a
    group exists, where they would hang; and always with $TRAINKIT_COLLECTIVE_GUARD=1, which the
    tests set, so that a single process finds the bug too); with the variable set,
    torch.distributed's own collectives raise as well. Nested sections keep the outer name."""
    global _refusing
    if _refusing is not None:
        yield
        return
    strict = os.environ.get(GUARD_ENV) == "1"
    if not (strict or td.is_initialized()):
        yield
        return
    saved = {}
    if strict:
        for name in _TD_COLLECTIVES:
            if hasattr(td, name):
                saved[name] = getattr(td, name)
                setattr(td, name, lambda *a, _n=name, **k: _refuse(f"torch.distributed.{_n}"))
    _refusing = section
    try:
        yield
    finally:
        _refusing = None
        for name, fn in saved.items():
            setattr(td, name, fn)


def rank_zero_decides(fn, *args, section: str = None):
    """fn(*args) run on rank 0 alone (inside rank_zero_only), its result returned on every rank;
    a UserError it raises is raised on every rank alike, so no rank is left waiting in a
    collective for one that failed, and every rank exits with the same one line. For decisions
    that must not depend on a rank's own view (its environment, its files). Collective.

    Without a group the one process decides, whatever rank its environment names (a process
    that poses as rank 1 of a one-process world has nobody to be told by)."""
    section = section or getattr(fn, "__name__", "rank 0 decides")
    if world_size() == 1:
        with rank_zero_only(section):
            return fn(*args)
    outcome = None
    if is_main():
        try:
            with rank_zero_only(section):
                outcome = ("ok", fn(*args))
        except UserError as e:
            outcome, failure = ("error", str(e)), e
    kind, value = broadcast_object(outcome)
    if kind == "error":
        if is_main():
            raise failure
        raise UserError(value)
    return value


def barrier() -> None:
    _check("barrier")
    if td.is_initialized():
        td.barrier()


def all_reduce_sum(x):
    """Sum over ranks of a tensor (returns a new tensor) or a number (returns a float)."""
    _check("all_reduce")
    if not td.is_initialized():
        return x
    as_float = not torch.is_tensor(x)
    t = torch.as_tensor(x, dtype=torch.float64 if as_float else None)
    orig_device = t.device
    t = t.detach().clone().to(_collective_device())
    td.all_reduce(t, op=td.ReduceOp.SUM)
    return float(t) if as_float else t.to(orig_device)


def all_reduce_max_ints(values: list) -> list:
    """Element-wise maximum over ranks of a list of integers (exact: int64). Collective."""
    _check("all_reduce_max_ints")
    if not td.is_initialized():
        return [int(v) for v in values]
    t = torch.tensor([int(v) for v in values], dtype=torch.int64, device=_collective_device())
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return t.cpu().tolist()


def broadcast_object(obj, src: int = 0):
    _check("broadcast_object")
    if not td.is_initialized():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def all_gather_object(obj) -> list:
    _check("all_gather_object")
    if not td.is_initialized():
        return [obj]
    out = [None] * td.get_world_size()
    td.all_gather_object(out, obj)
    return out


def gather_object(obj, dst: int = 0):
    """The list of every rank's `obj` on rank `dst`, None elsewhere (rank 0 alone holds it all)."""
    _check("gather_object")
    if not td.is_initialized():
        return [obj]
    out = [None] * td.get_world_size() if td.get_rank() == dst else None
    td.gather_object(obj, out, dst=dst)
    return out


def wrap_ddp(module: torch.nn.Module, forward_buffer_sync: bool = True, **ddp_kwargs) -> torch.nn.Module:
    """DistributedDataParallel when there is more than one rank, else the module itself.

    Buffers always start as rank 0's; `forward_buffer_sync=False` stops DDP from broadcasting
    them again before every forward (torch >= 2.14 names that `forward_sync_buffers` and warns
    about the older `broadcast_buffers`, which is used where the new name is unknown)."""
    if world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    if not forward_buffer_sync:
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
            ddp_kwargs["forward_sync_buffers"] = False
        else:
            ddp_kwargs["broadcast_buffers"] = False
    if device().type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device().index])
        ddp_kwargs.setdefault("output_device", device().index)
    return DistributedDataParallel(module, **ddp_kwargs)


def ddp_sync(module: torch.nn.Module, sync: bool):
    """A context for one backward pass: DDP all-reduces the gradients when `sync`, and only
    accumulates them locally otherwise (`no_sync`, for every micro-batch but the last). A plain
    module (one rank) has nothing to synchronise."""
    if sync or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()


def shutdown(wait_for_peers: bool = False) -> None:
    """Leave the process group. With `wait_for_peers` (a run that ended normally), meet every
    rank at a barrier first: a rank that tears its group down while a peer still talks to it
    can make gloo abort the peer at exit ("terminate called without an active exception").
    Error paths skip the barrier, which could wait on a dead peer for the whole timeout."""
    if not td.is_initialized():
        return
    if wait_for_peers:
        try:
            td.barrier()
        except RuntimeError:
            pass  # a peer failed after this rank finished; its own exit reports that
    td.destroy_process_group()
