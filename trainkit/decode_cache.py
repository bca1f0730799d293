"""The node decode cache: where a data set's decoded images live (each rank's memory, or one
file per node that every rank of the node maps), and the decode into that file.

A data set that decodes to less than $TRAINKIT_DATA_CACHE_MB (default 1024) MB, CIFAR-10 at 32
px (150 MB) say, is decoded by every rank into its own memory. A bigger one (CelebA-HQ at 256
px: 5.9 GB) is decoded once per node into a raw file in $TRAINKIT_DATA_CACHE (default: the
system temp folder) that every rank on the node maps: the node holds one copy in its page
cache, not one per rank, a data set larger than memory pages from disk, and the next run on
the node reuses the file. The file's name hashes the image paths, sizes, modification times,
resolution and channels, so an edited folder gets a new file; old ones can be deleted at will.
Every rank of the node decodes a block of the images into that file ($TRAINKIT_DATA_DECODERS
caps how many; 1 is the single decoder of earlier versions), under a temporary name that the
first rank of the node renames once all blocks are written: a file under the final name is
always complete, and a decode killed midway leaves only a `.tmp-*` file that no later run takes
for a cache. That temporary name carries the leader's host name, a token of its machine (boot
id and pid namespace), its pid and its start time, so the next run that loads the same cache on
that machine removes the leftovers whose leader is gone (one stderr line each, with the size);
a leftover of another host or machine, of a pid that is alive (its leader, or a later process
given the same pid), or named in the older format without a pid is kept. Ranks map the file
privately, so a rank's resident anonymous memory does not grow with the data set: pages are the
page cache's. Nodes that share the cache folder (a shared file system) share the file, decoded
by the first of them (`_sharing`). The choice of path (cache or memory), the cache folder and
the decoder limit are rank 0's environment's, broadcast: the path decides which collectives a
rank calls next.

`decoded` returns the images with a record of what it did (trainkit.data.ImageData.decode):
path (the cache file, or None in memory), images, decoded (by this rank), decoders (ranks that
decoded; 0 when reused), reused, seconds.
"""

import errno
import hashlib
import math
import os
import re
import secrets
import socket
import sys
import tempfile
import time

import numpy as np
import torch

from . import dist, fileio
from .errors import UserError
from .images import decode_into, decode_threads

CACHE_ENV = "TRAINKIT_DATA_CACHE"  # folder of decoded-image files shared by a node's ranks
CACHE_MB_ENV = "TRAINKIT_DATA_CACHE_MB"  # folders decoding to at least this many MB use it
DEFAULT_CACHE_MB = 1024
DECODERS_ENV = "TRAINKIT_DATA_DECODERS"  # at most this many ranks of a node decode its cache (unset/0: all)


def _data_plan(nbytes: int) -> tuple:
    """(whether to go through the cache, $TRAINKIT_DATA_CACHE, decoder limit) as rank 0's
    environment says, on every rank; a bad value is the same UserError on every rank. Collective.

    Which path a rank takes decides which collectives it calls next, so the ranks must not
    judge by their own environments: mpiexec forwards none of these variables to other nodes,
    and a rank on the in-memory path while another waits in the cache's collectives meets DDP's
    "expects same model" error or the full timeout. An unset folder stays each node's own temp
    folder (Slurm's $TMPDIR is node-local scratch, named per node)."""
    def mine():
        return nbytes >= _cache_threshold_bytes(), os.environ.get(CACHE_ENV, ""), _decoder_limit()

    if dist.world_size() == 1:  # one process: its own view (tests pose as another rank of one)
        return mine()
    return dist.rank_zero_decides(mine, section="data (rank 0 prepares)")


def decoded(shape: tuple, image, identity, source: str) -> tuple:
    """(uint8 N,C,H,W images, what the decode did: see the module doc), image(i) giving the i-th
    as H,W,C: in memory, or through the node's cache file when they are large. identity() yields
    the lines that name the input in the cache. Collective."""
    nbytes = math.prod(shape)
    cached, folder, limit = _data_plan(nbytes)
    if cached:
        return _shared_images(shape, nbytes, image, identity, source, folder, limit)
    began = time.perf_counter()
    images = torch.from_numpy(decode_into(np.empty(shape, np.uint8), image, source))
    return images, dict(path=None, images=shape[0], decoded=shape[0], decoders=1, reused=False,
                        seconds=time.perf_counter() - began)



def _cache_threshold_bytes() -> float:
    value = os.environ.get(CACHE_MB_ENV, "")
    try:
        mb = float(value) if value else DEFAULT_CACHE_MB
    except ValueError:
        raise UserError(f"${CACHE_MB_ENV}: {value!r} is not a number of MB") from None
    return mb * 2**20


def _cache_file(identity, shape: tuple, folder: str = "") -> str:
    """Where the decoded images of the input that `identity` lines name, at `shape` (N,C,H,W),
    are cached on this node: in `folder`, else the system temp folder."""
    h = hashlib.sha256(f"trainkit-images v1 {shape}\n".encode())
    for line in identity:
        h.update(f"{line}\n".encode())
    name = f"trainkit-images-{h.hexdigest()[:24]}-{'x'.join(map(str, shape))}.u8"
    return os.path.join(folder or tempfile.gettempdir(), name)


def _decoder_limit() -> int:
    value = os.environ.get(DECODERS_ENV, "")
    try:
        limit = int(value) if value else 0
    except ValueError:
        limit = -1
    if limit < 0:
        raise UserError(f"${DECODERS_ENV}: {value!r} is not a whole number of ranks (0: all of a node's ranks)")
    return limit


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _namespace(kind: str) -> str:
    """This process's `kind` namespace ("pid", "mnt"), e.g. "mnt:[4026531832]", or "" without /proc."""
    try:
        return os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return ""


def _machine_token() -> str:
    """8 hex digits naming this kernel boot and pid namespace: within one token a pid names one
    process, so only there does a dead pid prove that a writer is gone. A host name alone does
    not: two machines (or containers sharing a cache folder) may carry the same one."""
    return hashlib.sha256(f"{_boot_id()}\n{_namespace('pid')}".encode()).hexdigest()[:8]


def _host_label() -> str:
    # "+" separates the fields of a temporary name; a host name never needs more than 64 bytes
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "host"


def _start_time(pid: int):
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22), or None
    where that cannot be read (no /proc, the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # after "(comm) ": field 3 is [0]
    except (OSError, ValueError, IndexError):
        return None


def _writer_prefix(pid=None, start=None) -> str:
    """The start of the temporary name of a cache file that process `pid` (default: this one)
    writes: TMP_PREFIX, then host, machine token, pid and start time, each ended by "+"."""
    pid = os.getpid() if pid is None else pid
    start = _start_time(pid) if start is None else start
    return f"{fileio.TMP_PREFIX}{_host_label()}+{_machine_token()}+{pid}+{start or 0}+"


_WRITER = re.compile(r"(?P<host>[^+]*)\+(?P<machine>[0-9a-f]{8})\+(?P<pid>[0-9]+)\+(?P<start>[0-9]+)\+[^+]*")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _say(line: str) -> None:
    print(f"trainkit.data: {line}", file=sys.stderr, flush=True)


def sweep_leftovers(path: str) -> list:
    """Remove the temporary files of killed decodes of the cache file `path` whose writer is
    provably gone: named for this host and machine token, and for a pid that no process has now.
    Returns the names removed. Everything else is kept: another host's or machine's files, those
    of a live pid (whether its writer, or a later process given the same pid: said once each,
    as deletable by hand) and names in the older format without a pid (said in one line)."""
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.basename(path)
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith(fileio.TMP_PREFIX) and n.endswith(suffix)
                       and len(n) > len(fileio.TMP_PREFIX) + len(suffix))
    except OSError:  # no cache folder yet: nothing to sweep
        return []
    host, machine = _host_label(), _machine_token()
    removed, unnamed = [], []
    for name in names:
        writer = _WRITER.fullmatch(name[len(fileio.TMP_PREFIX):-len(suffix)])
        if writer is None:
            unnamed.append(name)
            continue
        pid, start = int(writer["pid"]), int(writer["start"])
        if writer["host"] != host or writer["machine"] != machine or not 0 < pid < 2**31:  # kill(0) is a group
            continue
        full = os.path.join(directory, name)
        if _pid_alive(pid):
            now = _start_time(pid)
            if start and now is not None and now != start:
                _say(f"kept {full}: pid {pid} is now another process, so its writer is gone; "
                     "delete it by hand when no job is running")
            continue
        try:
            nbytes = os.path.getsize(full)
            os.remove(full)
        except FileNotFoundError:  # another run's sweep got there first
            continue
        except OSError as e:
            _say(f"cannot remove {full}, a leftover of a killed decode: {e.strerror or e}")
            continue
        removed.append(name)
        _say(f"removed {full} ({_size(nbytes)}): a leftover of a killed decode (pid {pid} on {host} is gone)")
    if unnamed:
        _say(f"kept {len(unnamed)} temporary file(s) in {directory} named without a writer's pid "
             f"({', '.join(unnamed)}): they can be deleted by hand when no job is running")
    return removed


def _sharing(path: str) -> tuple:
    """(sharers, decoders): the global ranks, in order, that map the one file this rank knows as
    the cache file `path`, and those of them that decode it: the ranks of the first node among
    the sharers. Collective; every rank raises the same UserError.

    A node is a host name plus the kernel's boot id, so that two machines given the same name
    stay apart, plus the mount namespace, so that containers sharing a machine's name (host
    networking) stay apart too; it needs no LOCAL_RANK from the launcher, and the "nodes" of a
    multi-node test started on one machine share the decoding. Nodes whose cache folder is one folder (a shared
    file system) share the file too, decoded by one node while the others wait: each node's
    first rank writes a token file into its folder, and nodes that see the same tokens share.
    Names and device numbers cannot tell this (an NFS export has another device number on every
    client; /tmp is one name for many folders). Decoders stay on one node: ranks of several
    machines writing one file through shared mappings could write back each other's pages."""
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    node = (socket.gethostname(), _boot_id(), _namespace("mnt"), directory, name)
    nodes = dist.all_gather_object(node)
    leaders = {}  # the first rank of each node
    for r, key in enumerate(nodes):
        leaders.setdefault(key, r)
    if len({key[-1] for key in leaders}) == len(leaders):  # no other node loads this file: nothing to find out
        sharers = [r for r, key in enumerate(nodes) if key == node]
        return sharers, sharers
    me = dist.rank()
    token, error = None, None
    if leaders[node] == me:
        try:
            os.makedirs(directory, exist_ok=True)
            token = f"{_writer_prefix()}peer-{secrets.token_hex(8)}-{name}"  # swept like a killed decode's
            with open(os.path.join(directory, token), "x"):
                pass
        except OSError as e:
            token, error = None, f"{directory}: cannot write here ({e.strerror or e})"
    try:
        tokens = dist.all_gather_object((token, error))
        errors = [e for _, e in tokens if e]
        if errors:
            raise UserError(errors[0])
        seen = None
        if leaders[node] == me:  # the tokens of the nodes loading a file of this name that are here
            seen = tuple(r for r, (t, _) in enumerate(tokens) if t and nodes[r][-1] == name
                         and os.path.exists(os.path.join(directory, t)))
        views = dist.all_gather_object(seen)  # also: every node has looked, tokens may go
    finally:
        if token:
            _remove(os.path.join(directory, token))
    view = views[leaders[node]]
    sharers = [r for r, key in enumerate(nodes) if key[-1] == name and views[leaders[key]] == view]
    first = nodes[sharers[0]]
    return sharers, [r for r in sharers if nodes[r] == first]


def _new_cache_file(path: str, nbytes: int) -> str:
    """An empty file of `nbytes` under a temporary name beside `path` (fileio's prefix: never
    taken for a cache, whatever is in it; then this process's host, machine token, pid and start
    time, which let sweep_leftovers tell when its writer is gone), its space claimed: a memory
    map writing past a full disk dies of SIGBUS."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_writer_prefix(), suffix=os.path.basename(path), dir=directory)
    except OSError as e:
        raise UserError(f"{directory}: cannot write here ({e.strerror or e})") from None
    try:
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise
        os.ftruncate(fd, nbytes)
    except OSError as e:
        os.close(fd)
        _remove(tmp)
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
    os.close(fd)
    return tmp


def _decode_share(tmp: str, shape: tuple, image, source: str, part: int, parts: int, threads: int) -> int:
    """Decode part `part` of `parts` (a contiguous block of indices, so each decoder writes its
    own stretch of the file) into the file `tmp`, shared with the other decoders; the number of
    images decoded. Writes go through a shared mapping (the page cache), flushed before return."""
    n = shape[0]
    start, stop = n * part // parts, n * (part + 1) // parts
    if start == stop:
        return 0
    out = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=shape)
    try:
        decode_into(out, image, source, range(start, stop), threads)
        out.flush()
    finally:
        del out
    return stop - start


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _shared_images(shape: tuple, nbytes: int, image, identity, source: str, folder: str = "",
                   limit: int = 0) -> tuple:
    """(the images, the decode's record), from the node's cache file, decoded there first unless
    a complete one is there, and mapped read-only by every rank. Collective: every rank raises the same error.

    The first rank of the node (the leader) creates the file under a temporary name; every rank
    of the node (the first `limit` of them if not 0) decodes one block of the images into it;
    the leader renames it to its final name once every block is written, so a file under the
    final name is complete by construction, and a crash leaves only a temporary file behind,
    which the leader of the next run on the machine removes (sweep_leftovers). Nodes that share
    the cache folder share the file: the first of them decodes it (`_sharing`)."""
    path = _cache_file(identity(), shape, folder)
    peers, pool = _sharing(path)
    me = dist.rank()
    leader = peers[0]
    decoders = pool[:limit] if limit else pool
    plan = None
    if me == leader:
        sweep_leftovers(path)  # before creating its own: a live pid is never swept
        if os.path.isfile(path) and os.path.getsize(path) == nbytes:
            plan = ("reuse", path)
        else:
            try:
                plan = ("decode", _new_cache_file(path, nbytes))
                _say(f"decoding {shape[0]} images of {source} into {path} on {len(decoders)} rank(s) of "
                     f"{socket.gethostname()} (for {len(peers)} rank(s) that map it)")
            except UserError as e:
                plan = ("error", str(e))
    plans = dist.all_gather_object(plan)
    kind, where = plans[leader]
    created = where if me == leader and kind == "decode" else None
    try:
        errors = [p[1] for p in plans if p is not None and p[0] == "error"]
        if errors:
            raise UserError(errors[0])
        decoded, error, began = 0, None, time.perf_counter()
        if kind == "decode" and me in decoders:
            threads = decode_threads(len(decoders))
            try:
                decoded = _decode_share(where, shape, image, source, decoders.index(me), len(decoders), threads)
            except UserError as e:
                error = str(e)
        errors = [e for e in dist.all_gather_object(error) if e]
        if created and not errors:
            os.replace(created, path)
            created = None
        if any(p is not None and p[0] == "decode" for p in plans):  # the same test on every rank
            dist.barrier()  # the others map the file under its final name, once it has one
        if errors:
            raise UserError(errors[0])
    finally:
        if created:
            _remove(created)
    record = dict(path=path, images=shape[0], decoded=decoded, decoders=len(decoders) if kind == "decode" else 0,
                  reused=kind == "reuse", seconds=time.perf_counter() - began)
    # A private mapping: pages come from (and stay shared in) the page cache until written,
    # which nothing does; a stray write would never reach the file.
    return torch.from_file(path, shared=False, size=nbytes, dtype=torch.uint8).view(shape), record
