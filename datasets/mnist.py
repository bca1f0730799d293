"""MNIST from the official IDX .gz files to image folders.

    python datasets/mnist.py DOWNLOAD_DIR --out data/mnist [--size 32] [--fid_stats train]

DOWNLOAD_DIR holds `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz` (gzip or already decompressed), as
downloaded by the user. Writes grayscale `OUT/train/{label}_{index:05d}.png` (60,000) and
`OUT/test/...` (10,000), at 28 x 28 or resized with BICUBIC to --size.
`fashion_mnist.py` is the same conversion: Fashion-MNIST uses the same file names and format.
"""

import os

from PIL import Image

import dataset_tools as tools
from dataset_tools import UserError, run

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find(folder: str, stem: str) -> str:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise UserError(f"{os.path.join(folder, stem + '.gz')}: no such file")


def read_split(folder: str, split: str):
    image_stem, label_stem = FILES[split]
    image_path, label_path = find(folder, image_stem), find(folder, label_stem)
    images = tools.read_idx(image_path, 3)
    labels = tools.read_idx(label_path, 1)
    if len(images) != len(labels):
        raise UserError(f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path}")
    return images, labels


def items(images, labels, size):
    for image, label in zip(images, labels):
        im = Image.fromarray(image)
        if size != image.shape[0]:
            im = im.resize((size, size), resample=Image.BICUBIC)
        yield im, int(label)


def convert(argv, name: str, default_out: str):
    p = tools.parser(f"{name} IDX files -> OUT/{{train,test}}/{{label}}_{{index:05d}}.png", default_out)
    p.add_argument("download_dir", help="folder holding the four *-ubyte.gz files")
    p.add_argument("--size", type=run.POSITIVE_INT, default=28, help="output size (BICUBIC resize when not 28)")
    args = p.parse_args(argv)
    if args.size < 1:
        raise UserError(f"--size {args.size}: must be positive")
    if not os.path.isdir(args.download_dir):
        raise UserError(f"{args.download_dir}: no such folder")
    for split in FILES:
        tools.check_new_split(args.out, split)
    splits = {split: read_split(args.download_dir, split) for split in FILES}  # all checked before writing
    for split, (images, labels) in splits.items():
        n = tools.write_split(args.out, split, items(images, labels, args.size), total=len(images))
        print(f"{os.path.join(args.out, split)}: {n} images")
    tools.fid_statistics(args, list(FILES))


@run.main
def main(argv=None):
    convert(argv, "MNIST", "data/mnist")


if __name__ == "__main__":
    main()
