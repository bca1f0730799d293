"""A PNG grid of the first images of a samples npz.

    python -m evaluations.grid samples.npz grid.png --nrow 10 [--num 100] [--padding 2]
"""

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from trainkit import fileio, npz, run
from trainkit.errors import UserError


def grid_image(images: np.ndarray, nrow: int, padding: int = 2) -> np.ndarray:
    """uint8 N,H,W,C -> uint8 grid H',W',C (C as in the input), rows of `nrow` images."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    g = make_grid(x, nrow=nrow, padding=padding, pad_value=0)
    if images.shape[3] == 1:
        g = g[:1]  # make_grid repeats one channel to three
    return g.permute(1, 2, 0).contiguous().numpy()


def create_parser():
    p = run.ArgumentParser(description="samples npz -> PNG grid")
    p.add_argument("npz", help="samples npz (arr_0 uint8 N,H,W,C)")
    p.add_argument("out", help="output .png")
    p.add_argument("--nrow", type=run.POSITIVE_INT, default=10, help="images per row")
    p.add_argument("--num", type=run.NONNEG_INT, default=0, help="number of images, the first ones (0: nrow * nrow)")
    p.add_argument("--padding", type=run.NONNEG_INT, default=2, help="pixels between images and around the grid")
    return p


@run.main
def main(argv=None):
    args = create_parser().parse_args(argv)
    if not args.out.lower().endswith(".png"):
        raise UserError(f"{args.out}: output must be a .png file")
    images, _ = npz.read_samples(args.npz)
    images = images[: (args.num or args.nrow * args.nrow)]
    g = grid_image(images, args.nrow, args.padding)
    im = Image.fromarray(g[:, :, 0] if g.shape[2] == 1 else g)
    with fileio.atomic_path(args.out) as tmp:
        im.save(tmp, format="PNG")
    print(f"{args.out}: {len(images)} images, {args.nrow} per row")


if __name__ == "__main__":
    main()
