"""Write a samples npz as a folder of PNG files that is also a training / FID folder.

    python -m evaluations.npz_to_images samples_1000x32x32x3.npz out_dir

File names are `{label}_{index:06d}.png` when the npz has labels (`arr_1`), else
`{index:06d}.png`, so trainkit's image-folder loader reads the labels back and
`evaluations.images_to_npz` restores the same arrays. The folder is filled under a temporary
name and renamed into place: an interrupted export never looks complete.
"""

import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from trainkit import fileio, npz, run
from trainkit.errors import UserError


def image_name(index: int, label=None) -> str:
    return f"{index:06d}.png" if label is None else f"{int(label)}_{index:06d}.png"


def to_pil(image: np.ndarray) -> Image.Image:
    """uint8 H,W,C (C 1 or 3) -> a PIL image of mode L or RGB."""
    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)


def write_folder(images: np.ndarray, labels, out_dir: str) -> int:
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UserError(f"{out_dir}: exists and is not an empty folder")
    with fileio.atomic_dir(out_dir) as tmp:
        for i in tqdm(range(len(images)), desc=os.path.basename(out_dir), leave=False, disable=None):
            to_pil(images[i]).save(os.path.join(tmp, image_name(i, None if labels is None else labels[i])))
    return len(images)


def create_parser():
    p = run.ArgumentParser(description="samples npz -> folder of {label}_{index:06d}.png")
    p.add_argument("npz", help="samples npz (arr_0 uint8 N,H,W,C; optional arr_1 labels)")
    p.add_argument("out_dir", help="folder to create (must not exist or be empty)")
    return p


@run.main
def main(argv=None):
    args = create_parser().parse_args(argv)
    images, labels = npz.read_samples(args.npz)
    n = write_folder(images, labels, args.out_dir)
    print(f"{args.out_dir}: {n} images{' with labels' if labels is not None else ''}")


if __name__ == "__main__":
    main()
