"""pytorch-fid's InceptionV3, built from a local weights file.

The network itself is pytorch-fid's (`pytorch_fid.inception.InceptionV3`), never a copy, so
features and FID values agree with `python -m pytorch_fid`. pytorch-fid fetches its weights
through `torch.hub` (into `$TORCH_HOME/hub/checkpoints/`); on a machine without internet we
hand it a file instead: `pytorch_fid.inception.load_state_dict_from_url` is swapped for a
function returning the already loaded state dict while the model is built, then restored.

`make_random_weights` writes random weights in the same layout (for offline tests and
benchmarks), with batch-norm running statistics calibrated on random images: with the default
statistics (mean 0, variance 1) activations of a random network shrink layer after layer and
every image's pooled features collapse to ~0, which would make any FID comparison vacuous.
"""

import contextlib
import os

import torch
import torchvision
from pytorch_fid import inception as pfi

from trainkit.errors import UserError

WEIGHTS_NAME = os.path.basename(pfi.FID_WEIGHTS_URL)  # pt_inception-2015-12-05-6726825d.pth
WEIGHTS_URL = pfi.FID_WEIGHTS_URL
DIMS = tuple(pfi.InceptionV3.BLOCK_INDEX_BY_DIM)  # (64, 192, 768, 2048)


def default_weights_path() -> str:
    """Where torch.hub (and so pytorch-fid) keeps the weights: $TORCH_HOME/hub/checkpoints/."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", WEIGHTS_NAME)


def download_weights(path: str) -> None:
    """Fetch pytorch-fid's weights to `path` as pytorch-fid would; UserError when offline."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, path, progress=True)
    except Exception as e:  # URLError, HTTPError, OSError, timeouts: all mean "not available"
        raise UserError(
            f"Inception weights {path} not found and download from {WEIGHTS_URL} failed "
            f"({type(e).__name__}: {e}); place the file there or pass --inception_weights PATH"
        ) from None


def load_weights(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"--inception_weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a torch weights file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "Conv2d_1a_3x3.conv.weight" not in state:
        raise UserError(f"{path}: not pytorch-fid Inception weights (no Conv2d_1a_3x3.conv.weight)")
    return state


@contextlib.contextmanager
def _pytorch_fid_loads(state: dict):
    """While active, pytorch-fid's weight download returns `state` instead."""
    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        yield
    finally:
        pfi.load_state_dict_from_url = original


def build_inception(dims: int, weights_path: str, device="cpu") -> torch.nn.Module:
    """pytorch-fid's InceptionV3 returning the `dims` block, in eval mode, on `device`."""
    if dims not in pfi.InceptionV3.BLOCK_INDEX_BY_DIM:
        raise UserError(f"--dims {dims}: must be one of {', '.join(map(str, DIMS))}")
    state = load_weights(weights_path)
    try:
        with _pytorch_fid_loads(state):
            model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    except RuntimeError as e:  # missing / unexpected keys, wrong shapes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{weights_path}: not pytorch-fid Inception weights ({first})") from None
    return model.to(device).eval()


def make_random_weights(path: str, seed: int = 0, calibration_batches: int = 2, batch_size: int = 4) -> str:
    """Write random Inception weights in pytorch-fid's layout to `path` (for offline tests).

    torchvision's Inception3 with 1008 classes and no aux head has exactly the parameter names
    and shapes of pytorch-fid's file (its FID blocks subclass torchvision's), so it supplies the
    random initial values; the batch-norm statistics are then re-estimated by running pytorch-fid's
    own forward pass in training mode on uniform noise images.
    """
    torch.manual_seed(seed)
    random_net = torchvision.models.inception.Inception3(num_classes=1008, aux_logits=False, init_weights=True)
    built = []
    original_builder = pfi.fid_inception_v3

    def capture():
        built.append(original_builder())
        return built[-1]

    pfi.fid_inception_v3 = capture
    try:
        with _pytorch_fid_loads(random_net.state_dict()):
            wrapper = pfi.InceptionV3([3])
    finally:
        pfi.fid_inception_v3 = original_builder
    network = built[0]
    batch_norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in batch_norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    wrapper.train()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(calibration_batches):
            wrapper(torch.rand(batch_size, 3, 299, 299, generator=generator))
    for bn in batch_norms:
        bn.momentum = 0.1
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(network.state_dict(), tmp)
    os.replace(tmp, path)
    return path
