"""An entry point that starts its own ranks, as train_ddgan.py does with --num_process_per_node.

DDGAN's own command lines say how many processes to run (`--num_proc_node`,
`--num_process_per_node`, `--node_rank`, `--master_address`); its script spawns them itself.
Here a plain `python -m ddgan.train ... --num_process_per_node 4` hands the same command line to
torch's elastic launcher (`torch.distributed.launcher.api.elastic_launch`, what torchrun runs), so
the 4 ranks are torchrun's workers in every respect: same environment, same process group, same
failure handling. Under torchrun or mpiexec nothing is spawned; the flags, where given, must agree
with what the launcher started, or the run stops with one line naming both values.

Defaults: with one node and no --master_port, the rendezvous takes a free port from the OS; with
several nodes the port is the reference's hard-coded 6020 unless --master_port says otherwise.

Several nodes meet at node 0's --master_address:--master_port with the node ranks of the flags
(torch's static rendezvous): every node must use the same rendezvous run id, so it is derived from
what every node's command line shares (address, port, node count), never drawn at random. Two runs
on one machine at the same time need different ports anyway (node 0 listens on it), so their ids
differ too. $TORCHELASTIC_RUN_ID, when set, is used as given.
"""

import hashlib
import logging
import os
import sys
import uuid

from . import dist, run
from .errors import UserError

REFERENCE_PORT = 6020  # train_ddgan.py's init_processes hard-codes it


def add_args(parser):
    """The reference's multi-process flags. Their defaults are None so that a flag the user did
    not give is never compared with the launcher's numbers (help shows the reference default)."""
    a = parser.add_argument
    a("--num_proc_node", type=run.POSITIVE_INT, default=None,
      help="number of nodes (reference default 1); with more than one, start this same command on each "
           "node with its --node_rank")
    a("--num_process_per_node", type=run.POSITIVE_INT, default=None,
      help="ranks on this node (reference default 1): more than one starts them through torch's elastic "
           "launcher; under torchrun/mpiexec it must equal their processes per node")
    a("--node_rank", type=run.NONNEG_INT, default=None, help="index of this node, 0 .. num_proc_node-1 (default 0)")
    a("--local_rank", type=run.NONNEG_INT, default=None,
      help="rank within the node; set by the launcher (accepted for torch.distributed.launch, checked against "
           "LOCAL_RANK; default: the launcher's)")
    a("--master_address", default=None, help="address of node 0's rendezvous (reference default 127.0.0.1)")
    a("--master_port", type=run.int_range(1, 65535), default=None,
      help="rendezvous port (default: a free port on one node, the reference's 6020 on several)")
    return parser


def _value(o, name, default):
    v = o.get(name)
    return default if v is None else v


def _launcher_numbers():
    """(what started us, processes per node, nodes, node rank, local rank) from the environment, or
    None for a plain process."""
    kind = dist.launcher()
    env = os.environ
    if kind == "torchrun":
        world = int(env.get("WORLD_SIZE", "1"))
        local = int(env.get("LOCAL_WORLD_SIZE", world))
        node = env.get("GROUP_RANK")
        return ("torchrun", local, max(1, world // max(local, 1)), None if node is None else int(node),
                int(env.get("LOCAL_RANK", "0")))
    if kind == "mpi":
        world = int(env.get("OMPI_COMM_WORLD_SIZE") or env.get("PMI_SIZE") or env.get("PMIX_SIZE") or 1)
        local = int(env.get("OMPI_COMM_WORLD_LOCAL_SIZE") or env.get("MPI_LOCALNRANKS") or world)
        node = env.get("OMPI_COMM_WORLD_NODE_RANK")
        lrank = env.get("OMPI_COMM_WORLD_LOCAL_RANK") or env.get("MPI_LOCALRANKID")
        return ("mpiexec", local, max(1, world // max(local, 1)), None if node is None else int(node),
                None if lrank is None else int(lrank))
    return None


def check_agreement(o) -> None:
    """Under torchrun or mpiexec: every multi-process flag given must match the launcher."""
    numbers = _launcher_numbers()
    if numbers is None:
        return
    who, per_node, nodes, node_rank, local_rank = numbers
    for flag, theirs, what in (("num_process_per_node", per_node, "processes per node"),
                               ("num_proc_node", nodes, "nodes"),
                               ("node_rank", node_rank, "node rank"),
                               ("local_rank", local_rank, "local rank")):
        ours = o.get(flag)
        if ours is not None and theirs is not None and ours != theirs:
            raise UserError(f"--{flag} {ours} disagrees with {who}, which started {theirs} {what}; "
                            f"drop the flag or start {who} with {ours}")


def wants_spawn(o) -> bool:
    """True for a plain process whose flags ask for more than one rank."""
    if dist.launcher() != "local":
        return False
    return _value(o, "num_proc_node", 1) * _value(o, "num_process_per_node", 1) > 1


def run_id(address: str, port: int, nodes: int) -> str:
    """The rendezvous run id of a launch: the same on every node of one run. A one-node run with
    port 0 has no other node to agree with, and its port is not known yet: a random id."""
    if nodes == 1 and not port:
        return uuid.uuid4().hex[:12]
    return "ddgan-" + hashlib.sha256(f"{address}:{port}/{nodes}".encode()).hexdigest()[:12]


def spawn(o, module: str, argv=None) -> int:
    """Run `python -m module argv` as num_process_per_node elastic workers on this node (one
    agent per node, as torchrun); returns the exit status, a failed rank's own."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nodes, per_node = _value(o, "num_proc_node", 1), _value(o, "num_process_per_node", 1)
    node_rank = _value(o, "node_rank", 0)
    if node_rank >= nodes:
        raise UserError(f"--node_rank {node_rank} is not below --num_proc_node {nodes}")
    address = _value(o, "master_address", "127.0.0.1")
    if nodes == 1:
        port = _value(o, "master_port", 0)
        backend, configs = "c10d", {}
    else:  # the reference's own scheme: node ranks fixed by the flags, one known port
        port = _value(o, "master_port", REFERENCE_PORT)
        backend, configs = "static", {"rank": node_rank}
    config = LaunchConfig(min_nodes=nodes, max_nodes=nodes, nproc_per_node=per_node,
                          run_id=os.environ.get("TORCHELASTIC_RUN_ID") or run_id(address, port, nodes),
                          rdzv_backend=backend, rdzv_endpoint=f"{address}:{port}", rdzv_configs=configs,
                          max_restarts=0, monitor_interval=0.1)
    # a failed rank has said why on stderr; the agent's own report of it would be the last line
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    args = ["-m", module] + list(sys.argv[1:] if argv is None else argv)
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values()]
        return next((c for c in codes if c not in (0, None) and c > 0), 1)
    return 0
