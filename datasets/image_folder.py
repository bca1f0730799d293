"""Any folder tree of images (LSUN exports, FFHQ thumbnails, your own) to square image folders.

    python datasets/image_folder.py SRC --out data/mine --size 64 [--labels subfolders]
                                    [--test_fraction 0.1] [--fid_stats train]

Finds every image below SRC (jpg, jpeg, png, gif, bmp, webp, any case), resizes the shorter side
to --size (box-halving first, then BICUBIC, as openai's loader) and centre-crops a square.
Labels: 0 for all, or with `--labels subfolders` the index of the first-level subfolder in
sorted order (the names go to OUT/classes.txt). `--test_fraction` moves a seeded random share
of the images to OUT/test; the rest go to OUT/train.
"""

import os

import numpy as np
from PIL import Image

import dataset_tools as tools
from dataset_tools import UserError, run

EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"}


def find_images(src: str):
    files = []
    for dirpath, dirnames, names in os.walk(src):
        dirnames.sort()
        files += [os.path.join(dirpath, n) for n in sorted(names) if os.path.splitext(n)[1].lower() in EXTENSIONS]
    return files


def items(files, labels, size):
    for path, label in zip(files, labels):
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except Exception as e:
            raise UserError(f"{path}: cannot read image ({e})") from None
        yield tools.resize_square(image, size), label


@run.main
def main(argv=None):
    p = tools.parser("folder tree of images -> OUT/{train,test}/{label}_{index:05d}.png", "data/images")
    p.add_argument("src", help="folder to search (recursively) for images")
    p.add_argument("--size", type=run.POSITIVE_INT, default=64,
                   help="output side: shorter side resized to SIZE, then a centre crop")
    p.add_argument("--labels", choices=["none", "subfolders"], default="none", help="none: every label 0; "
                   "subfolders: the index of the first-level subfolder, names in OUT/classes.txt")
    p.add_argument("--test_fraction", type=run.float_range(0.0, 1.0, hi_open=True), default=0.0,
                   help="seeded random share of the images written to OUT/test instead of OUT/train")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    args = p.parse_args(argv)
    if not os.path.isdir(args.src):
        raise UserError(f"{args.src}: no such folder")
    if args.size < 1:
        raise UserError(f"--size {args.size}: must be positive")
    if not 0.0 <= args.test_fraction < 1.0:
        raise UserError(f"--test_fraction {args.test_fraction}: must be in [0, 1)")
    files = find_images(args.src)
    if not files:
        raise UserError(f"{args.src}: no images ({', '.join(sorted(EXTENSIONS))}) below this folder")
    if args.labels == "subfolders":
        tops = [os.path.relpath(f, args.src).split(os.sep)[0] if os.sep in os.path.relpath(f, args.src) else ""
                for f in files]
        if "" in tops:
            raise UserError(f"{files[tops.index('')]}: --labels subfolders needs every image inside a class folder")
        classes = sorted(set(tops))
        labels = [classes.index(t) for t in tops]
    else:
        classes, labels = None, [0] * len(files)
    order = np.random.default_rng(args.seed).permutation(len(files))
    n_test = int(round(len(files) * args.test_fraction))
    test = set(order[:n_test].tolist())
    splits = {"train": [i for i in range(len(files)) if i not in test], "test": sorted(test)}
    splits = {s: idx for s, idx in splits.items() if idx}
    for split in splits:
        tools.check_new_split(args.out, split)
    for split, idx in splits.items():
        n = tools.write_split(args.out, split, items([files[i] for i in idx], [labels[i] for i in idx], args.size),
                              total=len(idx))
        print(f"{os.path.join(args.out, split)}: {n} images")
    if classes is not None:
        from trainkit.fileio import write_text

        write_text(os.path.join(args.out, "classes.txt"), "".join(f"{i} {c}\n" for i, c in enumerate(classes)))
    tools.fid_statistics(args, list(splits))


if __name__ == "__main__":
    main()
