"""The sample and statistics file layouts, in one place.

Samples (openai layout): `samples_{N}x{H}x{W}x{C}.npz` with `arr_0` uint8 N,H,W,C and, for
class-conditional models, `arr_1` int64 labels. FID statistics (pytorch-fid layout): `mu`
float64 (d,) and `sigma` float64 (d, d); DDGAN's `.npy` statistics (a pickled dict of the same
two arrays) are read too. Readers validate and name the file on any mismatch;
writers go through a temporary file so a reader never sees half a file.
"""

import io
import zipfile

import blobfile as bf
import numpy as np
import torch

from .errors import UserError
from .fileio import atomic_path


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images N,C,H,W in [-1, 1] -> uint8 N,H,W,C, rounded as openai's sampler does."""
    x = ((x.detach().float() + 1) * 127.5).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def samples_filename(images: np.ndarray) -> str:
    return "samples_" + "x".join(str(d) for d in images.shape) + ".npz"


def _save(path, arrays: dict):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _open(path: str) -> dict:
    if not bf.exists(path):
        raise UserError(f"{path}: no such file")
    try:
        with bf.BlobFile(path, "rb") as f:
            raw = f.read()
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable npz file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def check_images(images: np.ndarray, name: str) -> None:
    if images.dtype != np.uint8:
        raise UserError(f"{name}: images must be uint8, got {images.dtype}")
    if images.ndim != 4:
        raise UserError(f"{name}: images must be N,H,W,C (4 dimensions), got shape {tuple(images.shape)}")
    if images.shape[-1] not in (1, 3):
        raise UserError(f"{name}: images must have 1 or 3 channels last (N,H,W,C), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise UserError(f"{name}: holds no images")


def write_samples(out_dir: str, images: np.ndarray, labels=None) -> str:
    images = np.asarray(images)
    check_images(images, out_dir)
    arrays = {"arr_0": images}
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (images.shape[0],):
            raise UserError(f"{out_dir}: {labels.shape[0]} labels for {images.shape[0]} images")
        arrays["arr_1"] = labels
    path = bf.join(out_dir, samples_filename(images))
    _save(path, arrays)
    return path


def read_samples(path: str):
    """(images uint8 N,H,W,C, labels int64 N or None) from an openai-layout npz."""
    z = _open(path)
    if "arr_0" not in z:
        raise UserError(f"{path}: no arr_0 (expected samples in openai's layout; found keys {sorted(z)})")
    images = z["arr_0"]
    check_images(images, path)
    labels = z.get("arr_1")
    if labels is not None:
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{path}: arr_1 must hold one integer label per image")
        labels = labels.astype(np.int64)
    return images, labels


def is_stats(path: str) -> bool:
    """True for a pytorch-fid statistics npz (keys mu and sigma)."""
    z = _open(path)
    return "mu" in z and "sigma" in z


def write_stats(path: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UserError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match")
    _save(path, {"mu": mu, "sigma": sigma})


def _read_npy_stats(path: str) -> dict:
    """DDGAN's statistics file: np.save of a dict {'mu': ..., 'sigma': ...} (a pickled object
    array; the repo's pytorch_fid reads it with np.load(allow_pickle=True).item()). Loading it
    runs pickle: read only statistics files you trust."""
    if not bf.exists(path):
        raise UserError(f"{path}: no such file")
    try:
        with bf.BlobFile(path, "rb") as f:
            arr = np.load(io.BytesIO(f.read()), allow_pickle=True)
        content = arr.item() if arr.dtype == object and arr.shape == () else None
    except (ValueError, OSError, EOFError, TypeError, AttributeError, ImportError) as e:
        raise UserError(f"{path}: not DDGAN FID statistics (a .npy holding a dict of mu and sigma): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(content, dict) or "mu" not in content or "sigma" not in content:
        what = sorted(content) if isinstance(content, dict) else f"an array of shape {arr.shape}"
        raise UserError(f"{path}: not DDGAN FID statistics (a .npy holding a dict of mu and sigma; found {what})")
    return {"mu": np.asarray(content["mu"]), "sigma": np.asarray(content["sigma"])}


def read_stats(path: str):
    """(mu, sigma) float64 from a pytorch-fid statistics npz or DDGAN's .npy dict."""
    z = _read_npy_stats(path) if str(path).endswith(".npy") else _open(path)
    if "mu" not in z or "sigma" not in z:
        raise UserError(f"{path}: not FID statistics (needs keys mu and sigma; found {sorted(z)})")
    mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UserError(f"{path}: mu has shape {mu.shape} but sigma has shape {sigma.shape}")
    return mu, sigma
