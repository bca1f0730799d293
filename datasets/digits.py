"""Export scikit-learn's bundled digits (1,797 8x8 images, 10 classes) as image folders.

    python datasets/digits.py --out data/digits --size 32

writes `OUT/train/{label}_{index:05d}.png` and `OUT/test/...` (grayscale PNG, upscaled with
BICUBIC), split by a fixed seed. It is the embedded default data set: no download, the same
files on every machine. The folders are built under a temporary name and renamed into place,
so an interrupted export never looks complete; an existing complete export is left as it is.
"""

import os
import sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

# `python datasets/digits.py` puts datasets/ on sys.path, not the repository: add it for trainkit.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tqdm import tqdm

from trainkit import fileio, run
from trainkit.errors import UserError


def split_indices(n: int, test_fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _complete(out: str, expected: dict, size: int) -> bool:
    """An earlier export with the same counts and image size is reused as it is."""
    for split, n in expected.items():
        folder = os.path.join(out, split)
        if not os.path.isdir(folder) or len(os.listdir(folder)) != n:
            return False
        with Image.open(os.path.join(folder, sorted(os.listdir(folder))[0])) as im:
            if im.size != (size, size):
                return False
    return True


def export(out: str, size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> dict:
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    train, test = split_indices(len(images), test_fraction, seed)
    expected = {"train": len(train), "test": len(test)}
    if _complete(out, expected, size):
        return expected
    with fileio.atomic_dir(out, replace=True) as tmp, \
            tqdm(total=len(images), desc=f"writing {out}", unit="img", file=sys.stderr) as bar:
        for split, idx in (("train", train), ("test", test)):
            os.makedirs(os.path.join(tmp, split))
            for i in idx:
                img = Image.fromarray(images[i], mode="L").resize((size, size), resample=Image.BICUBIC)
                img.save(os.path.join(tmp, split, f"{digits.target[i]}_{i:05d}.png"))
                bar.update()
    return expected


@run.main
def main(argv=None):
    p = run.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/digits", help="output folder (gets train/ and test/)")
    p.add_argument("--size", type=int, default=32, help="output side, BICUBIC from the digits' 8 px (at least 8)")
    p.add_argument("--test_fraction", type=float, default=0.2, help="share of the 1,797 images written to OUT/test")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    a = p.parse_args(argv)
    if a.size < 8:
        p.error(f"--size: {a.size} is smaller than the digits' 8 px")
    if not 0.0 < a.test_fraction < 1.0:
        p.error(f"--test_fraction: {a.test_fraction} is not between 0 and 1")
    try:
        counts = export(a.out, a.size, a.test_fraction, a.seed)
    except OSError as e:
        raise UserError(f"{a.out}: cannot write ({e.strerror or e})") from None
    print(f"{a.out}: {counts['train']} train, {counts['test']} test images at {a.size}x{a.size}")


if __name__ == "__main__":
    main()
