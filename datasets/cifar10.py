"""CIFAR-10 from the official python tarball to image folders.

    python datasets/cifar10.py cifar-10-python.tar.gz --out data/cifar10 [--fid_stats train]

Reads `cifar-10-python.tar.gz` (or the extracted `cifar-10-batches-py` folder) as downloaded from
https://www.cs.toronto.edu/~kriz/cifar.html — the script never downloads — and writes
`OUT/train/{label}_{index:05d}.png` (50,000, from data_batch_1..5 in order) and `OUT/test/...`
(10,000, test_batch). Labels are CIFAR's numbers 0..9 (airplane .. truck), so the class ids
equal the data set's own. The batches are Python pickles: they are read with an unpickler that
admits only the numpy array constructors these files use, not arbitrary code.
"""

import io
import os
import pickle
import tarfile

import numpy as np

import dataset_tools as tools
from dataset_tools import UserError, run

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
_ALLOWED = {("_codecs", "encode"),  # protocol-2 pickles from Python 3 store bytes this way
            ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return super().find_class(module, name)


def _unpickle(raw: bytes, name: str) -> dict:
    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:
        raise UserError(f"{name}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserError(f"{name}: expected data N x 3072 and N labels, got {data.shape} and {len(labels)}")
    return {"data": data, "labels": labels}


def read_batches(source: str) -> dict:
    """{batch name: {"data", "labels"}} from the tarball or the extracted folder."""
    wanted = TRAIN_BATCHES + TEST_BATCHES
    if not os.path.exists(source):
        raise UserError(f"{source}: no such file or directory")
    raw = {}
    if os.path.isdir(source):
        for name in wanted:
            path = os.path.join(source, name)
            if not os.path.isfile(path):
                raise UserError(f"{path}: missing (expected the extracted cifar-10-batches-py folder)")
            with open(path, "rb") as f:
                raw[name] = (f.read(), path)
    else:
        try:
            with tarfile.open(source, "r:*") as tar:
                for member in tar.getmembers():
                    base = os.path.basename(member.name)
                    if member.isfile() and base in wanted:
                        raw[base] = (tar.extractfile(member).read(), f"{source}:{member.name}")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"{source}: not a readable tar archive ({e})") from None
        missing = [n for n in wanted if n not in raw]
        if missing:
            raise UserError(f"{source}: no {', '.join(missing)} inside (expected cifar-10-python.tar.gz)")
    return {name: _unpickle(data, where) for name, (data, where) in raw.items()}


def items(batches: dict, names):
    for name in names:
        data, labels = batches[name]["data"], batches[name]["labels"]
        # each row: 1024 red, 1024 green, 1024 blue values, rows of the 32 x 32 image in order
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for image, label in zip(images, labels):
            yield image, label


@run.main
def main(argv=None):
    p = tools.parser("CIFAR-10 python tarball -> OUT/{train,test}/{label}_{index:05d}.png", "data/cifar10")
    p.add_argument("archive", help="cifar-10-python.tar.gz or the extracted cifar-10-batches-py folder")
    args = p.parse_args(argv)
    for split in ("train", "test"):
        tools.check_new_split(args.out, split)
    batches = read_batches(args.archive)
    for split, names in (("train", TRAIN_BATCHES), ("test", TEST_BATCHES)):
        total = sum(len(batches[b]["labels"]) for b in names)
        n = tools.write_split(args.out, split, items(batches, names), total=total)
        print(f"{os.path.join(args.out, split)}: {n} images")
    tools.fid_statistics(args, ["train", "test"])


if __name__ == "__main__":
    main()
