"""Training data as the loop consumes it: `load_dataset` (an image folder, an LMDB database, a
samples npz or CIFAR-10's own layout, to one `ImageData`) and `Batches`, the per-rank batches.

Images are decoded once, when the dataset is loaded, into one uint8 N,C,H,W tensor. That is
why a corrupt or truncated file is reported by name before the first step, rather than from a
loader worker mid-run, and why the training step's data cost is one tensor index. Where the
decoded images live (each rank's memory, or one cache file per node) is trainkit.decode_cache's
job; decoding one image by openai's folder conventions is trainkit.images'; LMDB databases are
trainkit.lmdb_data's. Their public names stay importable from here.

`Batches` is an infinite, resumable iterator. Epoch e visits a permutation of all images drawn
from (seed, e); each global batch is cut into one disjoint slice per rank; the position is just
the number of batches taken, so `state_dict()` restores it exactly.
"""

import os

import blobfile as bf
import numpy as np
import torch
from PIL import Image

from . import cifar_layout, dist, npz
from .decode_cache import CACHE_ENV, CACHE_MB_ENV, DECODERS_ENV, DEFAULT_CACHE_MB, decoded, sweep_leftovers  # noqa: F401 (re-export)
from .errors import UserError
from .images import (  # noqa: F401 (re-export)
    DECODE_BLOCK,
    IMAGE_EXTENSIONS,
    PROGRESS_MIN_IMAGES,
    center_crop_resize,
    class_index,
    list_image_files,
    load_image,
    pil_mode,
)
from .lmdb_data import LMDB_INSTALL, find_lmdb, lmdb_image, lmdb_order, open_lmdb  # noqa: F401 (re-export)


class ImageData:
    """Decoded images (uint8 N,C,H,W) with optional int64 labels. `decode`: what decoding an
    image folder or LMDB did (trainkit.decode_cache's record: path, images, decoded, decoders,
    reused, seconds); {} for arrays read from an npz."""

    def __init__(self, images: torch.Tensor, labels, source: str, classes=None, decode=None):
        self.images = images
        self.labels = labels
        self.source = source
        self.classes = classes
        self.num_classes = len(classes) if classes is not None else 0
        self.decode = dict(decode or {})

    def __len__(self):
        return self.images.shape[0]


def load_dataset(data_dir: str, image_size: int, class_cond: bool = False, channels: int = 3) -> ImageData:
    """An image folder, an LMDB database, a samples .npz or torchvision's CIFAR-10 folder / tarball
    (trainkit.cifar_layout: its training batches, with labels), decoded to `image_size` and `channels`."""
    if image_size < 1:
        raise UserError(f"--image_size: {image_size} must be positive")
    pil_mode(channels)
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

    # load_image looked up at call time: tests replace it to watch or fail the decode
    images, record = decoded(shape, lambda i: load_image(files[i], image_size, channels), identity, data_dir)
    labels, classes = (None, None)
    if class_cond:
        labels, classes = class_index(files)
        labels = torch.from_numpy(labels)
    return ImageData(images, labels, data_dir, classes, record)


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

        images, record = decoded((len(keys), channels, image_size, image_size), image, identity, data_dir)
    finally:
        env.close()
    return ImageData(images, None, data_dir, decode=record)


def _fit(a: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    image = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    if image.size != (image_size, image_size):
        image = center_crop_resize(image, image_size)
    return np.asarray(image.convert(pil_mode(channels))).reshape(image_size, image_size, channels)


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
