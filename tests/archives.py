"""Tiny archives in the real download formats, for the dataset converters and the seed configs:
MNIST / Fashion-MNIST IDX .gz files and CelebA's img_align_celeba JPEGs (zip or folder)."""

import gzip
import io
import struct
import zipfile

import numpy as np
from PIL import Image


def idx_gz(path, array):
    """An IDX file (unsigned bytes) as MNIST ships it, gzipped."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def mnist_files(folder, n_train=3, n_test=2, seed=0, every_class=False):
    """The four MNIST files of random 28 x 28 images; {'train': (images, labels), 't10k': ...}.
    every_class: labels 0..9 in turn, so every class is present."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10 if every_class else rng.integers(0, 10, n)).astype(np.uint8)
        idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        out[prefix] = (images, labels)
    return out


def celeba_image(seed):
    """178 x 218 like img_align_celeba: white inside the central 140 x 140, black outside."""
    a = np.zeros((218, 178, 3), np.uint8)
    top, left = (218 - 140) // 2, (178 - 140) // 2
    a[top : top + 140, left : left + 140] = 255 - seed
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def celeba_zip(path, numbers):
    """img_align_celeba.zip holding img_align_celeba/{number:06d}.jpg for each number."""
    with zipfile.ZipFile(path, "w") as z:
        for k in numbers:
            z.writestr(f"img_align_celeba/{k:06d}.jpg", celeba_image(k % 7))
    return path
