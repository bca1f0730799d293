"""What a launch by mpiexec needs from MPI, and nothing else in the project talks to MPI: the
environment of torchrun's variables filled in from the MPI world (`env_from_mpi`, called by
trainkit.dist.init), and ending every rank of the world after one failed (`abort_mpi`).

Rank 0 decides what every rank must share and broadcasts it: the rendezvous address and a free
port, and its TRAINKIT_* variables, which replace every other rank's (a rank started over ssh on
another host may have other values or none). A rank whose thread count nobody set
(OMP_NUM_THREADS) uses its host's cores divided by the ranks on that host. mpi4py is imported
only here, and only for an MPI launch (importing it initialises MPI).
"""

import os
import signal
import socket
import threading

from .errors import UserError

ABORT_GRACE_S = 5.0  # how long MPI_Abort may take before the failed rank exits by itself
MPI_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
SHARED_PREFIX = "TRAINKIT_"  # variables whose rank-0 value every rank of an MPI job takes


def launched_by_mpi() -> bool:
    """An MPI launcher's variables are set (and not torchrun's, which take precedence)."""
    return "TORCHELASTIC_RUN_ID" not in os.environ and any(v in os.environ for v in MPI_SIZE_VARS + MPI_RANK_VARS)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _resolve4(name: str):
    """The first IPv4 address `name` resolves to, or None."""
    try:
        return socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except (OSError, IndexError):
        return None


def _iface_address(iface: str):
    """The IPv4 address of network interface `iface` (Linux), or None."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", iface.encode()[:15]))  # SIOCGIFADDR
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _rank0_decision(views):
    """On rank 0: what every rank of the MPI world takes. `views` holds each rank's (host name,
    the IPv4 address it resolves to or None, its GLOO_SOCKET_IFNAME or None)."""
    settings = {k: v for k, v in os.environ.items() if k.startswith(SHARED_PREFIX)}
    iface = os.environ.get("GLOO_SOCKET_IFNAME") or None
    several_hosts = len({name for name, _, _ in views}) > 1
    error = None
    if "MASTER_ADDR" in os.environ:
        addr = os.environ["MASTER_ADDR"]
    elif not several_hosts:
        addr = "127.0.0.1"
    else:
        addr = (_iface_address(iface) if iface else None) or views[0][0]
    if several_hosts:
        # gloo binds the address a rank's host name resolves to unless GLOO_SOCKET_IFNAME names an
        # interface (a rank without one takes rank 0's); a loopback or missing address cannot be
        # reached from another host, and the ranks would wait for each other until the timeout.
        for r, (name, resolved, own_iface) in enumerate(views):
            if own_iface or iface:
                continue
            if resolved is None or resolved.startswith("127."):
                what = "does not resolve" if resolved is None else f"resolves to {resolved}, a loopback address"
                error = (f"rank {r}'s host name '{name}' {what}, so the ranks on other hosts cannot reach it: "
                         f"give run.sh --iface IFACE (sets GLOO_SOCKET_IFNAME for every rank) or map each host's "
                         f"name to its cluster address in /etc/hosts")
                break
    return {"addr": addr, "port": int(os.environ.get("MASTER_PORT", 0)) or _free_port(), "settings": settings,
            "iface": iface, "error": error}


def env_from_mpi() -> bool:
    """Fill torchrun's variables from MPI. Returns False when the MPI world has one rank."""
    from mpi4py import MPI  # imported lazily: importing it initialises MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return False
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank, local_size = node.Get_rank(), node.Get_size()
    name = socket.gethostname()
    views = comm.allgather((name, _resolve4(name), os.environ.get("GLOO_SOCKET_IFNAME") or None))
    decided = comm.bcast(_rank0_decision(views) if comm.Get_rank() == 0 else None, root=0)
    if decided["error"]:
        raise UserError(decided["error"])
    for k in [k for k in os.environ if k.startswith(SHARED_PREFIX)]:
        del os.environ[k]
    os.environ.update(decided["settings"])
    if decided["iface"] and not os.environ.get("GLOO_SOCKET_IFNAME"):
        os.environ["GLOO_SOCKET_IFNAME"] = decided["iface"]
    if "OMP_NUM_THREADS" not in os.environ:
        # nobody chose: this host's cores shared by the ranks on this host (not by all ranks,
        # which is all a launcher on one node can count)
        os.environ["OMP_NUM_THREADS"] = str(max(1, _cores() // local_size))
    os.environ.update(
        RANK=str(comm.Get_rank()),
        WORLD_SIZE=str(comm.Get_size()),
        LOCAL_RANK=str(local_rank),
        LOCAL_WORLD_SIZE=str(local_size),
        MASTER_ADDR=decided["addr"],
        MASTER_PORT=str(decided["port"]),
    )
    return True


def _tell_mpiexec_guard() -> None:
    """launch/run.sh bounds how long mpiexec may take to end the job after an abort; a rank on
    run.sh's host tells it so ($TRAINKIT_MPIEXEC_GUARD: host name and run.sh's pid)."""
    host, _, pid = os.environ.get("TRAINKIT_MPIEXEC_GUARD", "").partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"run.sh" not in f.read():
                return  # not run.sh (its process has gone, and the pid was reused)
        os.kill(int(pid), signal.SIGUSR2)
    except OSError:
        pass


def abort_mpi(code: int) -> None:
    """End every rank of an MPI world after this rank failed: without it the failed rank waits in
    MPI_Finalize for peers that wait in a collective for the whole timeout. Only when this
    process runs under MPI with mpi4py already imported (importing it here would start MPI)."""
    import sys

    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not launched_by_mpi():
        return
    try:
        if mpi.Is_initialized() and not mpi.Is_finalized() and mpi.COMM_WORLD.Get_size() > 1:
            sys.stdout.flush()
            sys.stderr.flush()
            _tell_mpiexec_guard()
            # MPI_Abort asks the launcher to end every rank; with the network to it cut that
            # request can wait forever, so this rank leaves by itself after a few seconds (the
            # launcher then sees a rank that exited without MPI_Finalize, and ends the job).
            threading.Timer(ABORT_GRACE_S, os._exit, args=(code,)).start()
            mpi.COMM_WORLD.Abort(code)
    except Exception:
        pass  # aborting is a courtesy to the peers; the exit status below still reports the failure
