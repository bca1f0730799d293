"""What every family's interpolation and editing entry points share: seeds, lerp / slerp, the
rows between two ends, the output paths that never overwrite, and the PNG grid + npz they write.

The families never import each other, so this lives in the runtime (gans.interpolate,
ddgan.interpolate, improved_diffusion.interpolate and improved_diffusion.edit use it).
"""

import blobfile as bf
import numpy as np
import torch
from PIL import Image

from . import fileio, npz
from .errors import UserError


def parse_seeds(text: str, flag: str = "--seeds", what: str = "seeds") -> list:
    """--seeds (or another comma-list flag, e.g. --pairs of images): at least two integers."""
    try:
        values = [int(s) for s in str(text).replace(" ", "").split(",") if s]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected a comma list of integers, e.g. 0,1,2") from None
    if len(values) < 2:
        raise UserError(f"{flag} {text!r}: need at least two {what} to interpolate between")
    return values


def lerp(a, b, t):
    return ((1 - t) * a.double() + t * b.double()).to(a.dtype)


def slerp(a, b, t, eps=1e-7):
    """Spherical interpolation along the great circle between a and b (White 2016): Gaussian
    draws keep their typical norm, where lerp's midpoints are shorter (and decode blurred)."""
    a64, b64 = a.double(), b.double()
    cos = (a64.flatten() @ b64.flatten()) / (a64.norm() * b64.norm()).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    if so.abs() < eps:  # (anti)parallel: the great circle is not defined, lerp is the limit
        return lerp(a, b, t)
    return ((torch.sin((1 - t) * omega) / so) * a64 + (torch.sin(t * omega) / so) * b64).to(a.dtype)


METHODS = {"lerp": lerp, "slerp": slerp}


def interpolation_row(a, b, num_steps, method):
    """num_steps points from a to b, both ends included (exactly a and b)."""
    ts = np.linspace(0.0, 1.0, num_steps)
    return torch.stack([a] + [METHODS[method](a, b, float(t)) for t in ts[1:-1]] + [b])


def output_paths(out, run_dir, default_name):
    """(png, npz): --out (or run_dir/default_name) and the npz beside it, `<out without .png>.npz`.
    An existing file is never overwritten."""
    png = out or bf.join(run_dir, default_name)
    stem = png[:-4] if png.lower().endswith(".png") else png
    paths = (png, stem + ".npz")
    for p in paths:
        if bf.exists(p):
            raise UserError(f"{p}: already exists; not overwriting it (choose another --out)")
    return paths


def grid_image(images, nrow, padding=2):
    """uint8 N,H,W,C images as one PIL image, `nrow` per row, laid out as torchvision's
    make_grid (black `padding` px around every image), without importing torchvision (seconds)."""
    n, h, w, c = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    canvas = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.uint8)
    for k, image in enumerate(images):
        y, x = divmod(k, cols)
        top, left = y * (h + padding) + padding, x * (w + padding) + padding
        canvas[top:top + h, left:left + w] = image
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def write_grid_and_npz(images, labels, nrow, png, npz_path, npz_images=None, npz_labels=None):
    """uint8 N,H,W,C images as a PNG grid of `nrow` per row (`grid_image`) and as a
    samples-layout npz (arr_0, and arr_1 labels when given): the grid's images and `labels`, or
    `npz_images` and `npz_labels` when given. Rank 0 only."""
    if npz_images is None:
        npz_images, npz_labels = images, labels
    npz.write_samples_file(npz_path, npz_images, npz_labels)
    with fileio.atomic_path(png) as tmp:
        grid_image(images, nrow).save(tmp, format="PNG")
