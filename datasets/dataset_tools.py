"""Shared plumbing of the dataset preparation scripts in this folder.

Every script turns an archive the user downloaded (never downloads itself) into image folders
`OUT/<split>/{label}_{index:05d}.png` — numeric labels, so trainkit's image-folder loader and
openai's (label = the name before the first "_") both read the classes back — and optionally
the pytorch-fid statistics of a split, `OUT/fid_stats_<split>.npz`. A split is written under a
temporary name and renamed into place, so an interrupted run never leaves a folder that looks
complete. Bad input is one line naming the file, exit status 2 (trainkit's `run.main`).
"""

import gzip
import os
import struct
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

# `python datasets/x.py` puts datasets/ on sys.path, not the repository: add it for trainkit.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from trainkit import fileio, run  # noqa: E402 (path)
from trainkit.errors import UserError  # noqa: E402 (path)


def parser(description: str, default_out: str):
    p = run.ArgumentParser(description=description)
    p.add_argument("--out", default=default_out, help="output folder (gets one folder per split)")
    p.add_argument("--fid_stats", default="", help="comma-separated splits whose FID statistics to "
                   "write as OUT/fid_stats_<split>.npz, e.g. train")
    p.add_argument("--dims", type=int, choices=(64, 192, 768, 2048), default=2048,
                   help="Inception block for --fid_stats")
    p.add_argument("--inception_weights", default="", help="local pytorch-fid weights file for --fid_stats")
    p.add_argument("--batch-size", type=run.POSITIVE_INT, default=50, help="batch size for --fid_stats")
    p.add_argument("--device", default=None, help="device for --fid_stats")
    return p


def check_new_split(out: str, split: str) -> None:
    folder = os.path.join(out, split)
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise UserError(f"{folder}: exists and is not empty; remove it or choose another --out")


def progress(total, desc: str):
    """The tqdm bar every export shows on stderr. On an error it clears itself, so that a
    terminal shows just the one-line error."""
    return _Progress(total=total, desc=desc, unit="img", file=sys.stderr)


class _Progress(tqdm):
    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.leave = False
        return super().__exit__(kind, value, traceback)


def write_split(out: str, split: str, items, total=None) -> int:
    """Write (image: PIL.Image | uint8 H,W[,C] array, label: int) pairs as OUT/split/{label}_{index:05d}.png;
    `total`, the number of pairs when known, is for the progress bar."""
    check_new_split(out, split)
    count = 0
    folder = os.path.join(out, split)
    with fileio.atomic_dir(folder) as tmp, progress(total, f"writing {folder}") as bar:
        for index, (image, label) in enumerate(items):
            if not isinstance(image, Image.Image):
                image = Image.fromarray(np.asarray(image, dtype=np.uint8))
            image.save(os.path.join(tmp, f"{int(label)}_{index:05d}.png"))
            count += 1
            bar.update()
    return count


def fid_statistics(args, splits_written) -> None:
    """Write OUT/fid_stats_<split>.npz for the splits named in --fid_stats."""
    wanted = [s for s in args.fid_stats.split(",") if s]
    for split in wanted:
        if split not in splits_written:
            raise UserError(f"--fid_stats {split}: no such split (this script writes {', '.join(splits_written)})")
    if not wanted:
        return
    from evaluations import fid  # imported only when asked for: it loads pytorch-fid and torch

    for split in wanted:
        dst = os.path.join(args.out, f"fid_stats_{split}.npz")
        fid.save_statistics(os.path.join(args.out, split), dst, dims=args.dims, batch_size=args.batch_size,
                            device=args.device, weights=args.inception_weights or None)
        print(f"{dst}: FID statistics ({args.dims} dims)")


def read_idx(path: str, expected_dims: int) -> np.ndarray:
    """An IDX file (MNIST's format, gzip or not): big-endian magic 0x0000 0x08 ndim, then sizes."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4:
        raise UserError(f"{path}: not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != expected_dims:
        raise UserError(f"{path}: not an IDX file of unsigned bytes with {expected_dims} dimension(s) "
                        f"(magic {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path}: header says {shape} but holds {data.size} bytes of data")
    return data.reshape(shape)


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size` (BICUBIC, after box-halving large images as openai's loader does),
    then a centre crop to size x size."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(max(size, round(x * scale)) for x in image.size), resample=Image.BICUBIC)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))
