"""The sample and statistics file layouts, in one place.

Samples (openai layout): `samples_{N}x{H}x{W}x{C}.npz` with `arr_0` uint8 N,H,W,C and, for
class-conditional models, `arr_1` int64 labels; beside it, when the writer says how the samples
were made, `samples_{N}x{H}x{W}x{C}.json` (INFO_FIELDS, plus a family's extras), which
evaluations reads instead of knowing each family's sampler. FID statistics (pytorch-fid layout): `mu`
float64 (d,) and `sigma` float64 (d, d); DDGAN's `.npy` statistics (a pickled dict of the same
two arrays) are read too. Readers validate and name the file on any mismatch;
writers go through a temporary file so a reader never sees half a file.
"""

import io
import json
import os
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


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _open(path: str) -> dict:
    if not bf.exists(path):
        raise UserError(f"{path}: no such file")
    try:
        with bf.BlobFile(path, "rb") as f:
            raw = f.read()
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable npz file ({_first_line(e)})") from None


def check_images(images: np.ndarray, name: str) -> None:
    if images.dtype != np.uint8:
        raise UserError(f"{name}: images must be uint8, got {images.dtype}")
    if images.ndim != 4:
        raise UserError(f"{name}: images must be N,H,W,C (4 dimensions), got shape {tuple(images.shape)}")
    if images.shape[-1] not in (1, 3):
        raise UserError(f"{name}: images must have 1 or 3 channels last (N,H,W,C), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise UserError(f"{name}: holds no images")


def _arrays(images, labels, name) -> dict:
    """The npz arrays of the samples layout, validated (one line naming `name` otherwise)."""
    images = np.asarray(images)
    check_images(images, name)
    arrays = {"arr_0": np.ascontiguousarray(images)}
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (images.shape[0],):
            raise UserError(f"{name}: {labels.reshape(-1).shape[0]} labels for {images.shape[0]} images")
        arrays["arr_1"] = labels
    return arrays


def write_samples_file(path: str, images: np.ndarray, labels=None) -> str:
    """The samples layout (arr_0 uint8 N,H,W,C, arr_1 int64 labels when given) at `path`, written
    atomically: for writers that choose the file name (an interpolation's npz beside its PNG,
    images_to_npz's --out)."""
    _save(path, _arrays(images, labels, path))
    return path


# the sample info's required fields and their types (None allowed only where listed)
INFO_FIELDS = {"sampler": (str,), "network_evaluations": (int,), "num_samples": (int,), "seed": (int, type(None))}


def info_path(npz_path: str) -> str:
    """samples_NxHxWxC.json beside samples_NxHxWxC.npz."""
    return os.path.splitext(str(npz_path))[0] + ".json"


def check_info(info, name: str) -> dict:
    """`info` if it is a dict with INFO_FIELDS of their types (bools are not ints here), else one
    UserError line naming `name` and the field."""
    if not isinstance(info, dict):
        raise UserError(f"{name}: sample info must be a JSON object, got {type(info).__name__}")
    for field, types in INFO_FIELDS.items():
        if field not in info:
            raise UserError(f"{name}: sample info lacks {field!r}")
        value = info[field]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise UserError(f"{name}: sample info {field!r} must be {want}, got {value!r}")
    if info["network_evaluations"] < 0 or info["num_samples"] < 1:
        raise UserError(f"{name}: sample info network_evaluations {info['network_evaluations']} / "
                        f"num_samples {info['num_samples']}: must be >= 0 / >= 1")
    return info


def write_samples(out_dir: str, images: np.ndarray, labels=None, info=None) -> str:
    """Write samples_NxHxWxC.npz into `out_dir` (and, with `info`, its json beside it); returns
    the npz path. `info["num_samples"]` defaults to the images' count and must equal it.

    Order: a sidecar already there (from samples of the same shape) is removed first, then the
    npz is written, then the new json: a reader never finds info that describes other samples,
    at worst (a crash in between) no info."""
    arrays = _arrays(images, labels, out_dir)
    images = arrays["arr_0"]
    path = bf.join(out_dir, samples_filename(images))
    sidecar = info_path(path)
    if info is not None:
        info = check_info({"num_samples": int(images.shape[0]), **info}, sidecar)
        if info["num_samples"] != images.shape[0]:
            raise UserError(f"{sidecar}: sample info num_samples {info['num_samples']}, but "
                            f"{images.shape[0]} images are written")
    if bf.exists(sidecar):
        bf.remove(sidecar)
    _save(path, arrays)
    if info is not None:
        with atomic_path(sidecar) as tmp:
            with open(tmp, "w") as f:
                json.dump(info, f, indent=1, sort_keys=True)
                f.write("\n")
    return path


def read_sample_info(npz_path: str):
    """The info written beside a samples npz (a dict with INFO_FIELDS), or None when the npz has
    none (samples from an older writer or another tool); an unreadable or invalid json is one
    UserError line naming it."""
    sidecar = info_path(npz_path)
    if not bf.exists(sidecar):
        return None
    try:
        with bf.BlobFile(sidecar, "r") as f:
            info = json.load(f)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"{sidecar}: not readable sample info ({_first_line(e)})") from None
    return check_info(info, sidecar)


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
                        f"{_first_line(e)}") from None
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
