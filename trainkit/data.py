"""Training data: image folders (openai's conventions), LMDB databases (DDGAN's) and sample npz files.

Images are decoded once, when the dataset is loaded, into one uint8 N,C,H,W tensor. That is
why a corrupt or truncated file is reported by name before the first step, rather than from a
loader worker mid-run, and why the training step's data cost is one tensor index. A folder that
decodes to less than $TRAINKIT_DATA_CACHE_MB (default 1024) MB, CIFAR-10 at 32 px (150 MB) say,
is decoded by every rank into its own memory. A bigger one (CelebA-HQ at 256 px: 5.9 GB) is
decoded once per node into a raw file in $TRAINKIT_DATA_CACHE (default: the
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

Folder conventions, as openai/improved-diffusion: files found recursively by extension
(jpg, jpeg, png, gif), sorted; the class label is the file name before its first "_", classes
numbered in sorted order; an image is halved with BOX filtering while its short side is at
least twice the target, then resized with BICUBIC so the short side matches, then centre
cropped.

LMDB databases, as DDGAN reads them (datasets_prep/lmdb_datasets.py, CelebA-HQ) and as
torchvision's LSUN class does: `--data_dir` may be a directory holding `train.lmdb`, an LMDB
directory itself (`*.lmdb`, or any directory holding `data.mdb`, LSUN's `bedroom_train_lmdb`), or
a single-file LMDB (`*.lmdb` / `*.mdb` file). Order: when the keys are exactly
str(0).encode() .. str(N-1).encode() (DDGAN's layout) image i is key str(i); otherwise (LSUN's
hashes) the keys' byte order, which is LMDB's cursor order. A value is an encoded image file
(PNG, JPEG, WebP, ...: read by PIL) or raw uint8 RGB bytes of a square image, side
sqrt(len / 3); either then goes through the folder path (mode conversion, resize, crop), so an
LMDB written by datasets/lmdb_export.py from a folder decodes to the folder's bytes. LMDB data
sets carry no labels. The `lmdb` package is optional (`pip install -e ".[lmdb]"`) and imported
only when an LMDB is read.

Decoding more than PROGRESS_MIN_IMAGES images shows a tqdm bar on stderr, on rank 0 only.

`Batches` is an infinite, resumable iterator. Epoch e visits a permutation of all images drawn
from (seed, e); each global batch is cut into one disjoint slice per rank; the position is just
the number of batches taken, so `state_dict()` restores it exactly.
"""

import concurrent.futures
import errno
import hashlib
import io
import math
import os
import re
import secrets
import socket
import sys
import tempfile
import time

import blobfile as bf
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import cifar_layout, dist, fileio, npz
from .errors import UserError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif")
CACHE_ENV = "TRAINKIT_DATA_CACHE"  # folder of decoded-image files shared by a node's ranks
CACHE_MB_ENV = "TRAINKIT_DATA_CACHE_MB"  # folders decoding to at least this many MB use it
DEFAULT_CACHE_MB = 1024
DECODERS_ENV = "TRAINKIT_DATA_DECODERS"  # at most this many ranks of a node decode its cache (unset/0: all)
PROGRESS_MIN_IMAGES = 2000  # fewer decode in a few seconds: no progress bar
DECODE_BLOCK = 1024  # images handed to the decoding threads at a time
LMDB_INSTALL = 'pip install -e ".[lmdb]"'

# What this process's last load_dataset of an image folder or LMDB did: path (the cache file, or
# None in memory), images, decoded (by this rank), decoders (ranks that decoded; 0 when reused),
# reused, seconds. Read by tests and benchmarks/data_scale.py; nothing in the runtime uses it.
last_decode = {}


def list_image_files(data_dir: str) -> list:
    """Image files under `data_dir`, recursively, in sorted order."""
    if not data_dir:
        raise UserError("--data_dir is empty: name an image folder or a samples .npz")
    if not bf.isdir(data_dir):
        raise UserError(f"{data_dir}: no such data directory")
    out = []
    for entry in sorted(bf.listdir(data_dir)):
        path = bf.join(data_dir, entry)
        if "." in entry and entry.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS:
            out.append(path)
        elif bf.isdir(path):
            out.extend(list_image_files(path))
    return out


def center_crop_resize(image: Image.Image, resolution: int) -> Image.Image:
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = resolution / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    left = (image.size[0] - resolution) // 2
    top = (image.size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def _mode(channels: int) -> str:
    if channels not in (1, 3):
        raise UserError(f"--num_channels: {channels} is not 1 or 3")
    return "L" if channels == 1 else "RGB"


def load_image(path: str, resolution: int, channels: int = 3) -> np.ndarray:
    """One image as uint8 H,W,C at `resolution`, or a UserError naming the file."""
    try:
        with bf.BlobFile(path, "rb") as f:
            image = Image.open(f)
            image.load()
        image = image.convert(_mode(channels))
    except UserError:
        raise
    except Exception as e:  # PIL raises many types for bad files; all mean the same here
        raise UserError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    if image.size[0] < 1 or image.size[1] < 1:
        raise UserError(f"{path}: empty image")
    arr = np.asarray(center_crop_resize(image, resolution))
    return arr.reshape(resolution, resolution, channels)


def class_index(names: list):
    """Labels for file names by openai's rule (text before the first '_', sorted classes)."""
    keys = [bf.basename(n).split("_")[0] for n in names]
    classes = sorted(set(keys))
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[k] for k in keys], dtype=np.int64), classes


class ImageData:
    """Decoded images (uint8 N,C,H,W) with optional int64 labels."""

    def __init__(self, images: torch.Tensor, labels, source: str, classes=None):
        self.images = images
        self.labels = labels
        self.source = source
        self.classes = classes
        self.num_classes = len(classes) if classes is not None else 0

    def __len__(self):
        return self.images.shape[0]


def load_dataset(data_dir: str, image_size: int, class_cond: bool = False, channels: int = 3) -> ImageData:
    """An image folder, an LMDB database, a samples .npz or torchvision's CIFAR-10 folder / tarball
    (trainkit.cifar_layout: its training batches, with labels), decoded to `image_size` and `channels`."""
    if image_size < 1:
        raise UserError(f"--image_size: {image_size} must be positive")
    _mode(channels)
    if str(data_dir).endswith(".npz"):
        return _load_npz(data_dir, image_size, class_cond, channels)
    cifar_at = cifar_layout.find(data_dir)
    if cifar_at is not None:  # arrays like an npz's: uint8 N,H,W,C and labels
        return _load_npz(cifar_at, image_size, class_cond, channels, arrays=cifar_layout.read_split(cifar_at))
    lmdb_at = find_lmdb(data_dir)
    if lmdb_at is not None:
        if class_cond:
            raise UserError(f"{data_dir}: an LMDB data set has no labels; a class-conditional model needs an "
                            "image folder or a samples .npz")
        return _load_lmdb(lmdb_at, data_dir, image_size, channels)
    files = list_image_files(data_dir)
    if not files:
        raise UserError(f"{data_dir}: no images (.jpg, .jpeg, .png, .gif) in this folder")
    shape = (len(files), channels, image_size, image_size)

    def identity():
        for path in files:
            st = bf.stat(path)
            yield f"{path}\t{st.size}\t{st.mtime}"

    images = _decoded(shape, lambda i: load_image(files[i], image_size, channels), identity, data_dir)
    labels, classes = (None, None)
    if class_cond:
        labels, classes = class_index(files)
        labels = torch.from_numpy(labels)
    return ImageData(images, labels, data_dir, classes)


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

    if dist.world_size() == 1:
        return mine()
    outcome = None
    if dist.rank() == 0:
        try:
            with dist.rank_zero_only("data (rank 0 prepares)"):
                outcome = ("ok", mine())
        except UserError as e:
            outcome = ("error", str(e))
    kind, value = dist.broadcast_object(outcome)
    if kind == "error":
        raise UserError(value)
    return value


def _decoded(shape: tuple, image, identity, source: str) -> torch.Tensor:
    """uint8 N,C,H,W images, image(i) giving the i-th as H,W,C: in memory, or through the node's
    cache file when they are large. identity() yields the lines that name the input in the cache.
    Collective."""
    nbytes = math.prod(shape)
    cached, folder, limit = _data_plan(nbytes)
    if cached:
        return _shared_images(shape, nbytes, image, identity, source, folder, limit)
    began = time.perf_counter()
    images = torch.from_numpy(_decode_into(np.empty(shape, np.uint8), image, source))
    last_decode.clear()
    last_decode.update(path=None, images=shape[0], decoded=shape[0], decoders=1, reused=False,
                       seconds=time.perf_counter() - began)
    return images


def _decode_into(out: np.ndarray, image, source: str, indices=None, threads=None) -> np.ndarray:
    """out[i] = image(i) (uint8 H,W,C -> C,H,W) for i in `indices` (default: all) on a pool of
    threads (PIL releases the GIL), with a progress bar on rank 0 when there are more than
    PROGRESS_MIN_IMAGES."""
    indices = range(out.shape[0]) if indices is None else indices

    def put(i):
        out[i] = image(i).transpose(2, 0, 1)

    show = dist.rank() == 0 and len(indices) > PROGRESS_MIN_IMAGES
    with tqdm(total=len(indices), desc=f"decoding {source}", unit="img", file=sys.stderr, disable=not show) as bar:
        with concurrent.futures.ThreadPoolExecutor(threads or _decode_threads(1)) as pool:
            # pool.map submits every index at once: a Future per image, memory that grows with
            # the data set (~300 MB at 200k images). A block at a time keeps it flat.
            for start in range(0, len(indices), DECODE_BLOCK):
                for _ in pool.map(put, indices[start:start + DECODE_BLOCK]):
                    bar.update()
    return out


def _decode_threads(decoders: int) -> int:
    """Threads per decoding rank: the cores this process may use, shared with the node's other
    decoders unless the launcher already pinned each rank to its own cores."""
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    if usable >= cores:
        usable = max(1, cores // max(1, decoders))
    return min(8, usable)


def find_lmdb(data_dir) -> str:
    """The LMDB that `data_dir` names (see the module's doc), or None when it names none."""
    data_dir = str(data_dir)
    if not data_dir or not fileio.is_local(data_dir):
        return None
    if os.path.isdir(data_dir):
        for candidate in (data_dir, os.path.join(data_dir, "train.lmdb")):
            if os.path.isfile(os.path.join(candidate, "data.mdb")):
                return candidate
        train = os.path.join(data_dir, "train.lmdb")
        if os.path.exists(train):
            return train  # a train.lmdb that is not one fails when opened, by name
        return data_dir if data_dir.rstrip(os.sep).endswith(".lmdb") else None
    if os.path.isfile(data_dir) and data_dir.endswith((".lmdb", ".mdb")):
        return data_dir
    return None


def open_lmdb(path: str):
    """(read-only environment, keys in image order) of the LMDB at `path`, or a UserError naming it."""
    try:
        import lmdb
    except ImportError:
        raise UserError(f"{path}: reading an LMDB needs the lmdb package: {LMDB_INSTALL}") from None
    subdir = os.path.isdir(path)
    if subdir and not os.path.isfile(os.path.join(path, "data.mdb")):
        raise UserError(f"{path}: not an LMDB database (no data.mdb in this directory)")
    try:
        env = lmdb.open(path, subdir=subdir, readonly=True, lock=False, readahead=False, meminit=False)
        with env.begin() as txn:
            keys = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
    except lmdb.Error as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        reason = reason[len(path) + 2:] if reason.startswith(f"{path}: ") else reason
        raise UserError(f"{path}: not an LMDB database ({reason})") from None
    if not keys:
        env.close()
        raise UserError(f"{path}: the LMDB database holds no images")
    return env, lmdb_order(keys)


def lmdb_order(keys: list) -> list:
    """DDGAN's keys str(0) .. str(N-1) in index order; any other keys in byte order."""
    text = [k.decode("ascii", "replace") for k in keys]
    if all(t.isdigit() and t == str(int(t)) for t in text):
        numbers = sorted(int(t) for t in text)
        if numbers == list(range(len(keys))):
            return [str(i).encode() for i in numbers]
    return sorted(keys)


_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def lmdb_image(value: bytes, where: str, resolution: int, channels: int) -> np.ndarray:
    """One LMDB value (encoded image, or raw RGB bytes of a square) as uint8 H,W,C at `resolution`."""
    side = math.isqrt(len(value) // 3)
    raw = len(value) > 0 and len(value) == 3 * side * side
    image = None
    if not raw or value.startswith(_SIGNATURES):
        try:
            image = Image.open(io.BytesIO(value))
            image.load()
        except Exception as e:  # as load_image: PIL raises many types for bad data
            if not raw:
                raise UserError(f"{where}: neither an encoded image nor raw RGB bytes of a square image "
                                f"({len(value)} bytes; {type(e).__name__}: {e})") from None
            image = None
    if image is None:
        image = Image.fromarray(np.frombuffer(value, np.uint8).reshape(side, side, 3), mode="RGB")
    image = image.convert(_mode(channels))
    arr = np.asarray(center_crop_resize(image, resolution))
    return arr.reshape(resolution, resolution, channels)


def _load_lmdb(path: str, data_dir: str, image_size: int, channels: int) -> ImageData:
    env, keys = open_lmdb(path)
    try:
        def image(i):
            with env.begin(buffers=False) as txn:  # one read transaction per thread
                value = txn.get(keys[i])
            return lmdb_image(value, f"{path}: key {keys[i].decode('ascii', 'replace')!r}", image_size, channels)

        def identity():
            data_file = os.path.join(path, "data.mdb") if os.path.isdir(path) else path
            st = os.stat(data_file)
            yield f"lmdb {os.path.abspath(data_file)}\t{st.st_size}\t{st.st_mtime}\t{len(keys)}"

        images = _decoded((len(keys), channels, image_size, image_size), image, identity, data_dir)
    finally:
        env.close()
    return ImageData(images, None, data_dir)


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
        _decode_into(out, image, source, range(start, stop), threads)
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
                   limit: int = 0) -> torch.Tensor:
    """The images, from the node's cache file, decoded there first unless a complete one is
    there, and mapped read-only by every rank. Collective: every rank raises the same error.

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
            threads = _decode_threads(len(decoders))
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
    last_decode.clear()
    last_decode.update(path=path, images=shape[0], decoded=decoded, decoders=len(decoders) if kind == "decode" else 0,
                       reused=kind == "reuse", seconds=time.perf_counter() - began)
    # A private mapping: pages come from (and stay shared in) the page cache until written,
    # which nothing does; a stray write would never reach the file.
    return torch.from_file(path, shared=False, size=nbytes, dtype=torch.uint8).view(shape)


def _fit(a: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    image = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    if image.size != (image_size, image_size):
        image = center_crop_resize(image, image_size)
    return np.asarray(image.convert(_mode(channels))).reshape(image_size, image_size, channels)


def _load_npz(path, image_size, class_cond, channels, arrays=None):
    images, labels = npz.read_samples(path) if arrays is None else arrays
    if images.shape[1:] != (image_size, image_size, channels):
        images = np.stack([_fit(a, image_size, channels) for a in images])
    classes = None
    if class_cond:
        if labels is None:
            raise UserError(f"{path}: --class_cond needs labels but the npz has no arr_1")
        classes = [str(c) for c in range(int(labels.max()) + 1)]
        labels = torch.from_numpy(labels.astype(np.int64))
    else:
        labels = None
    images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, labels, path, classes)


def shard(n: int, rank=None, world=None) -> list:
    """This rank's share of range(n): disjoint between ranks, complete together."""
    rank = dist.rank() if rank is None else rank
    world = dist.world_size() if world is None else world
    return list(range(rank, n, world))


def _mix(*parts) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class Batches:
    """Infinite per-rank batches (x in [-1, 1] float32 N,C,H,W, y int64 or None)."""

    def __init__(self, data: ImageData, batch_size: int, seed: int = 0, random_flip: bool = False,
                 rank=None, world=None):
        self.data = data
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.random_flip = random_flip
        self.rank = dist.rank() if rank is None else rank
        self.world = dist.world_size() if world is None else world
        if self.batch_size < 1:
            raise UserError(f"--batch_size: {batch_size} must be positive")
        global_batch = self.batch_size * self.world
        if len(data) < global_batch:
            raise UserError(
                f"{data.source}: {len(data)} images, fewer than one global batch of {global_batch} "
                f"(batch size {self.batch_size} x {self.world} ranks)"
            )
        self.batches_per_epoch = len(data) // global_batch
        self.taken = 0
        self._perm_epoch = None
        self._perm = None

    def _permutation(self, epoch):
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch))
            self._perm = torch.randperm(len(self.data), generator=g)
            self._perm_epoch = epoch
        return self._perm

    def indices(self, k: int) -> torch.Tensor:
        """Data indices of this rank's part of global batch k."""
        epoch, j = divmod(k, self.batches_per_epoch)
        start = j * self.batch_size * self.world + self.rank * self.batch_size
        return self._permutation(epoch)[start : start + self.batch_size]

    @property
    def epoch(self) -> int:
        return self.taken // self.batches_per_epoch

    def __iter__(self):
        return self

    def __next__(self):
        idx = self.indices(self.taken)
        x = self.data.images[idx].float().div_(127.5).sub_(1.0)
        if self.random_flip:
            g = torch.Generator().manual_seed(_mix(self.seed, self.taken, self.rank, 1))
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        y = self.data.labels[idx] if self.data.labels is not None else None
        self.taken += 1
        return x, y

    def state_dict(self) -> dict:
        return {"batches": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.taken = int(state["batches"])

    def rederive(self, taken: int, global_batch: int) -> str:
        """Continue where a run with another global batch (another world size) stopped after
        `taken` of its batches: in the same epoch (permutations depend only on seed and epoch),
        at the first of this run's batches that starts at or after the images it had reached,
        so no image of the epoch is seen twice. Returns where that is, for the log."""
        old_per_epoch = max(len(self.data) // int(global_batch), 1)
        epoch, j = divmod(int(taken), old_per_epoch)
        here = self.batch_size * self.world
        k = -(-j * int(global_batch) // here)  # ceil: the first batch not overlapping the old ones
        if k >= self.batches_per_epoch:
            epoch, k = epoch + 1, 0
        self.taken = epoch * self.batches_per_epoch + k
        return f"epoch {epoch}, batch {k} of {self.batches_per_epoch}"
