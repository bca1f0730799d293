"""LMDB databases as image sources, as DDGAN reads them (datasets_prep/lmdb_datasets.py,
CelebA-HQ) and as torchvision's LSUN class does: finding one, opening it, the image order, and
decoding one value.

`--data_dir` may be a directory holding `train.lmdb`, an LMDB directory itself (`*.lmdb`, or
any directory holding `data.mdb`, LSUN's `bedroom_train_lmdb`), or a single-file LMDB (`*.lmdb`
/ `*.mdb` file). Order: when the keys are exactly str(0).encode() .. str(N-1).encode()
(DDGAN's layout) image i is key str(i); otherwise (LSUN's hashes) the keys' byte order, which
is LMDB's cursor order. A value is an encoded image file (PNG, JPEG, WebP, ...: read by PIL) or
raw uint8 RGB bytes of a square image, side sqrt(len / 3); either then goes through the folder
path (mode conversion, resize, crop), so an LMDB written by datasets/lmdb_export.py from a
folder decodes to the folder's bytes. LMDB data sets carry no labels. The `lmdb` package is
optional (`pip install -e ".[lmdb]"`) and imported only when an LMDB is read.
"""

import io
import math
import os

import numpy as np
from PIL import Image

from . import fileio
from .errors import UserError
from .images import center_crop_resize, pil_mode

LMDB_INSTALL = 'pip install -e ".[lmdb]"'


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
    image = image.convert(pil_mode(channels))
    arr = np.asarray(center_crop_resize(image, resolution))
    return arr.reshape(resolution, resolution, channels)

