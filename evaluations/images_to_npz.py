"""Pack a folder of images into a samples npz (openai layout: arr_0 uint8 N,H,W,C, arr_1 labels).

    python -m evaluations.images_to_npz image_dir out.npz

Reads the image files directly in the folder. Names written by `evaluations.npz_to_images` or the
`datasets/` scripts (`{label}_{index}.png` or `{index}.png`) are ordered by index and, when every
name carries a label, the labels become `arr_1`; other names are taken in sorted order without
labels. Grayscale images give C = 1, anything else is converted to RGB. The npz is written
atomically; if `out` is an existing folder the file is named `samples_{N}x{H}x{W}x{C}.npz` in it.
"""

import os
import re

import numpy as np
from PIL import Image
from tqdm import tqdm

from trainkit import npz, run
from trainkit.errors import UserError

EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp", ".gif"}
_LABELLED = re.compile(r"^(-?\d+)_(\d+)$")
_INDEXED = re.compile(r"^(\d+)$")


def ordered_files(folder: str):
    """(paths, labels or None) in index order."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such folder")
    names = sorted(n for n in os.listdir(folder)
                   if os.path.splitext(n)[1].lower() in EXTENSIONS and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise UserError(f"{folder}: no image files ({', '.join(sorted(EXTENSIONS))})")
    stems = [os.path.splitext(n)[0] for n in names]
    labelled = [_LABELLED.match(s) for s in stems]
    indexed = [_INDEXED.match(s) for s in stems]
    labels = None
    if all(labelled):
        keys = [int(m.group(2)) for m in labelled]
        labels = [int(m.group(1)) for m in labelled]
    elif all(indexed):
        keys = [int(m.group(1)) for m in indexed]
    else:
        keys = list(range(len(names)))
    if len(set(keys)) != len(keys):
        keys = list(range(len(names)))  # repeated indices: fall back to name order
    order = sorted(range(len(names)), key=lambda i: keys[i])
    paths = [os.path.join(folder, names[i]) for i in order]
    return paths, None if labels is None else np.array([labels[i] for i in order], dtype=np.int64)


def read_image(path: str, channels: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise UserError(f"{path}: cannot read image ({e})") from None
    return a[:, :, None] if channels == 1 else a


def read_folder(folder: str):
    paths, labels = ordered_files(folder)
    try:
        with Image.open(paths[0]) as im:
            channels = 1 if im.mode in ("L", "1", "I;16", "I", "F") else 3
    except Exception as e:
        raise UserError(f"{paths[0]}: cannot read image ({e})") from None
    first = read_image(paths[0], channels)
    images = np.empty((len(paths),) + first.shape, dtype=np.uint8)
    images[0] = first
    for i in tqdm(range(1, len(paths)), desc=os.path.basename(os.path.normpath(folder)), leave=False, disable=None):
        a = read_image(paths[i], channels)
        if a.shape != first.shape:
            raise UserError(f"{paths[i]}: image is {a.shape[1]}x{a.shape[0]} but {os.path.basename(paths[0])} "
                            f"is {first.shape[1]}x{first.shape[0]}; all images must have one size")
        images[i] = a
    return images, labels


def write_npz(path: str, images: np.ndarray, labels=None) -> str:
    folder = os.path.isdir(path)
    if not folder and not path.endswith(".npz"):
        raise UserError(f"{path}: output must end in .npz (or be an existing folder)")
    target = os.path.join(path, npz.samples_filename(images)) if folder else path
    if os.path.exists(target):  # a file this command did not write: never replaced
        raise UserError(f"{target}: already exists; remove it or choose another output")
    if folder:
        return npz.write_samples(path, images, labels)
    return npz.write_samples_file(path, images, labels)  # the one writer of the samples layout


def create_parser():
    p = run.ArgumentParser(description="folder of images -> samples npz (arr_0, arr_1)")
    p.add_argument("image_dir", help="folder of images of one size; names {label}_{index}.png give arr_1 labels")
    p.add_argument("out", help="output .npz path, or an existing folder")
    return p


@run.main
def main(argv=None):
    args = create_parser().parse_args(argv)
    images, labels = read_folder(args.image_dir)
    path = write_npz(args.out, images, labels)
    print(f"{path}: {images.shape[0]} images {images.shape[1]}x{images.shape[2]}x{images.shape[3]}"
          f"{' with labels' if labels is not None else ''}")


if __name__ == "__main__":
    main()
