"""CIFAR-10 where torchvision keeps it: `ROOT/cifar-10-batches-py/` or `ROOT/cifar-10-python.tar.gz`.

torchvision's `CIFAR10(root, train=True, download=True)`, which NVlabs' train_ddgan.py calls with
root './data', downloads https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into `root` and
extracts it to `root/cifar-10-batches-py/`: data_batch_1 .. data_batch_5 (training, in that
order) and test_batch, each a Python pickle of a dict whose 'data' is uint8 N x 3072 (a row is
1024 red, then 1024 green, then 1024 blue values, the 32 x 32 image row by row: C,H,W) and whose
'labels' are N ints 0..9 (airplane .. truck). This module is the one reader of that layout:
trainkit.data loads it as training data (any family's `--data_dir`) and datasets/cifar10.py
exports it to image folders.

`find(path)` accepts the folder holding `cifar-10-batches-py` (torchvision's root), that folder
itself, a folder holding only the tarball, or the tarball. The extracted folder wins over the
tarball beside it, as in torchvision (which only downloads when the files are missing). A
tarball is read in memory through tarfile: nothing is extracted, so nothing can be left
half-written. Nothing is downloaded here: a missing data set is one line saying what to
download and where (`missing_message`).

The pickles are read with an unpickler that admits only the numpy constructors these files
use, so a doctored batch file cannot run code. Otherwise a batch is read as torchvision reads
it (`pickle.load(f, encoding="latin1")`, then 'data' and 'labels', else 'fine_labels'), so the
files a cluster user brings are taken whoever pickled them: the download's Python 2 pickles,
whose keys are Python 2 strings, and batches re-pickled by Python 3, whose keys are str (any
protocol; 5, Python 3.14's default, stores arrays through numpy's `_frombuffer`). Keys pickled
as Python 3 bytes (b'data'), which torchvision cannot read, are accepted too.
"""

import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from . import fileio
from .errors import UserError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
SPLITS = {"train": TRAIN_BATCHES, "test": TEST_BATCHES}
SIDE = 32
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")

_ALLOWED = {("_codecs", "encode"),  # protocol-2 pickles written by Python 3 store bytes this way
            ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            # protocol 5 (out-of-band buffers) rebuilds an array from its bytes: numpy 1.x, 2.x
            ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return super().find_class(module, name)


def find(path) -> str:
    """The extracted batches folder or the tarball that `path` names (see the module's doc), or None."""
    path = str(path)
    if not path or not fileio.is_local(path):
        return None
    if os.path.isfile(path):
        return path if path.endswith(_TAR_SUFFIXES) else None
    if not os.path.isdir(path):
        return None
    if os.path.basename(os.path.normpath(path)) == FOLDER or os.path.isfile(os.path.join(path, TRAIN_BATCHES[0])):
        return path
    for candidate in (os.path.join(path, FOLDER), os.path.join(path, ARCHIVE)):
        if os.path.exists(candidate):
            return candidate
    return None


def missing_message(folder: str) -> str:
    """The one line for a folder without CIFAR-10: what to download, and where to put it."""
    return (f"{folder}: no CIFAR-10 here (neither {FOLDER}/ nor {ARCHIVE}); download {URL} into {folder}/ "
            "(the file itself, or extracted) or give --data_dir")


def require(folder: str) -> str:
    """find(folder), or a UserError with missing_message(folder)."""
    found = find(folder)
    if found is None:
        raise UserError(missing_message(folder))
    return found


def _entry(batch, *names):
    """batch[name] for the first of `names` present as str or as bytes."""
    for name in names:
        for key in (name, name.encode()):
            if key in batch:
                return batch[key]
    raise KeyError(" or ".join(repr(n) for n in names))


def _unpickle(raw: bytes, where: str):
    try:
        # latin1, as torchvision: a Python 2 string (the download's keys, and its arrays' bytes)
        # becomes str byte for byte, which numpy takes back as the array's bytes
        batch = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
        data = np.asarray(_entry(batch, "data"), dtype=np.uint8)
        labels = np.asarray(_entry(batch, "labels", "fine_labels"), dtype=np.int64)
    except Exception as e:  # pickle, KeyError, TypeError...: all mean "not a batch file"
        raise UserError(f"{where}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE or labels.shape != (len(data),):
        raise UserError(f"{where}: expected data N x 3072 and N labels, got {data.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{where}: labels outside 0..9 (found {labels.min()} .. {labels.max()})")
    return data, labels


def read_batches(source: str, names) -> dict:
    """{name: (data uint8 N x 3072, labels int64 N)} of the named batch files of the folder or tarball."""
    names = list(names)
    raw = {}
    if os.path.isdir(source):
        for name in names:
            path = os.path.join(source, name)
            if not os.path.isfile(path):
                raise UserError(f"{path}: missing (expected the extracted {FOLDER} folder: "
                                f"{', '.join(TRAIN_BATCHES + TEST_BATCHES)})")
            with open(path, "rb") as f:
                raw[name] = (f.read(), path)
    elif os.path.isfile(source):
        try:
            with tarfile.open(source, "r:*") as tar:
                for member in tar:
                    base = os.path.basename(member.name)
                    if member.isfile() and base in names and base not in raw:
                        raw[base] = (tar.extractfile(member).read(), f"{source}:{member.name}")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise UserError(f"{source}: not a readable tar archive ({type(e).__name__}: {e})") from None
        missing = [n for n in names if n not in raw]
        if missing:
            raise UserError(f"{source}: no {', '.join(missing)} inside (expected {ARCHIVE} from {URL})")
    else:
        raise UserError(f"{source}: no such file or directory")
    return {name: _unpickle(*raw[name]) for name in names}


def to_hwc(data: np.ndarray) -> np.ndarray:
    """N x 3072 rows (C,H,W order) as uint8 N,32,32,3 images."""
    return np.ascontiguousarray(data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))


def read_split(source: str, split: str = "train"):
    """(images uint8 N,32,32,3, labels int64 N) of a split, batches in torchvision's order; `source`
    is anything find() accepts."""
    if split not in SPLITS:
        raise UserError(f"{split}: not a CIFAR-10 split (train or test)")
    batches = read_batches(require(source), SPLITS[split])
    data = np.concatenate([batches[n][0] for n in SPLITS[split]])
    labels = np.concatenate([batches[n][1] for n in SPLITS[split]])
    return to_hwc(data), labels
