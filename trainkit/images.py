"""Image decoding: one image file or encoded image to uint8 H,W,C at a resolution, by
openai/improved-diffusion's conventions, and many of them on a pool of threads.

Folder conventions, as openai/improved-diffusion: files found recursively by extension
(jpg, jpeg, png, gif), sorted; the class label is the file name before its first "_", classes
numbered in sorted order; an image is halved with BOX filtering while its short side is at
least twice the target, then resized with BICUBIC so the short side matches, then centre
cropped.

Decoding more than PROGRESS_MIN_IMAGES images shows a tqdm bar on stderr, on rank 0 only.
"""

import concurrent.futures
import os
import sys

import blobfile as bf
import numpy as np
from PIL import Image
from tqdm import tqdm

from . import dist
from .errors import UserError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif")
PROGRESS_MIN_IMAGES = 2000  # fewer decode in a few seconds: no progress bar
DECODE_BLOCK = 1024  # images handed to the decoding threads at a time


def list_image_files(data_dir: str) -> list:
    """Image files under `data_dir`, recursively, in sorted order."""
    if not data_dir:
        raise UserError("--data_dir is empty: name an image folder or a samples .npz")
    if not bf.isdir(data_dir):
        raise UserError(f"{data_dir}: no such data directory")
    out = []
    for entry in sorted(bf.listdir(data_dir)):
        path = bf.join(data_dir, entry)
        if "." in entry and entry.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS:
            out.append(path)
        elif bf.isdir(path):
            out.extend(list_image_files(path))
    return out


def center_crop_resize(image: Image.Image, resolution: int) -> Image.Image:
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = resolution / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    left = (image.size[0] - resolution) // 2
    top = (image.size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def pil_mode(channels: int) -> str:
    if channels not in (1, 3):
        raise UserError(f"--num_channels: {channels} is not 1 or 3")
    return "L" if channels == 1 else "RGB"


def load_image(path: str, resolution: int, channels: int = 3) -> np.ndarray:
    """One image as uint8 H,W,C at `resolution`, or a UserError naming the file."""
    try:
        with bf.BlobFile(path, "rb") as f:
            image = Image.open(f)
            image.load()
        image = image.convert(pil_mode(channels))
    except UserError:
        raise
    except Exception as e:  # PIL raises many types for bad files; all mean the same here
        raise UserError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    if image.size[0] < 1 or image.size[1] < 1:
        raise UserError(f"{path}: empty image")
    arr = np.asarray(center_crop_resize(image, resolution))
    return arr.reshape(resolution, resolution, channels)


def class_index(names: list):
    """Labels for file names by openai's rule (text before the first '_', sorted classes)."""
    keys = [bf.basename(n).split("_")[0] for n in names]
    classes = sorted(set(keys))
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[k] for k in keys], dtype=np.int64), classes



def decode_into(out: np.ndarray, image, source: str, indices=None, threads=None) -> np.ndarray:
    """out[i] = image(i) (uint8 H,W,C -> C,H,W) for i in `indices` (default: all) on a pool of
    threads (PIL releases the GIL), with a progress bar on rank 0 when there are more than
    PROGRESS_MIN_IMAGES."""
    indices = range(out.shape[0]) if indices is None else indices

    def put(i):
        out[i] = image(i).transpose(2, 0, 1)

    show = dist.rank() == 0 and len(indices) > PROGRESS_MIN_IMAGES
    with tqdm(total=len(indices), desc=f"decoding {source}", unit="img", file=sys.stderr, disable=not show) as bar:
        with concurrent.futures.ThreadPoolExecutor(threads or decode_threads(1)) as pool:
            # pool.map submits every index at once: a Future per image, memory that grows with
            # the data set (~300 MB at 200k images). A block at a time keeps it flat.
            for start in range(0, len(indices), DECODE_BLOCK):
                for _ in pool.map(put, indices[start:start + DECODE_BLOCK]):
                    bar.update()
    return out


def decode_threads(decoders: int) -> int:
    """Threads per decoding rank: the cores this process may use, shared with the node's other
    decoders unless the launcher already pinned each rank to its own cores."""
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    if usable >= cores:
        usable = max(1, cores // max(1, decoders))
    return min(8, usable)

