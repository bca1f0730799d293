"""CIFAR-10 from the official python tarball to image folders.

    python datasets/cifar10.py cifar-10-python.tar.gz --out data/cifar10 [--fid_stats train]

Reads `cifar-10-python.tar.gz` (or the extracted `cifar-10-batches-py` folder, or torchvision's
root folder holding either, e.g. ./data) as downloaded from
https://www.cs.toronto.edu/~kriz/cifar.html — the script never downloads — and writes
`OUT/train/{label}_{index:05d}.png` (50,000, from data_batch_1..5 in order) and `OUT/test/...`
(10,000, test_batch). Labels are CIFAR's numbers 0..9 (airplane .. truck), so the class ids
equal the data set's own. The reader is trainkit.cifar_layout, the one the training entry points
use for such a `--data_dir` (so exporting is optional): the pickles are read with an unpickler
that admits only the numpy array constructors these files use, not arbitrary code.
"""

import os

import dataset_tools as tools
from dataset_tools import UserError, run
from trainkit import cifar_layout

TRAIN_BATCHES = list(cifar_layout.TRAIN_BATCHES)
TEST_BATCHES = list(cifar_layout.TEST_BATCHES)


def read_batches(source: str) -> dict:
    """{batch name: {"data", "labels"}} from the tarball, the extracted folder or the folder holding either."""
    if not os.path.exists(source):
        raise UserError(f"{source}: no such file or directory")
    found = cifar_layout.find(source)
    if found is None:
        raise UserError(cifar_layout.missing_message(source))
    batches = cifar_layout.read_batches(found, TRAIN_BATCHES + TEST_BATCHES)
    return {name: {"data": data, "labels": labels} for name, (data, labels) in batches.items()}


def items(batches: dict, names):
    for name in names:
        images = cifar_layout.to_hwc(batches[name]["data"])
        yield from zip(images, batches[name]["labels"])


@run.main
def main(argv=None):
    p = tools.parser("CIFAR-10 python tarball -> OUT/{train,test}/{label}_{index:05d}.png", "data/cifar10")
    p.add_argument("archive", help="cifar-10-python.tar.gz, the extracted cifar-10-batches-py folder, "
                   "or the folder holding either")
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
