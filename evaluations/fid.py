"""Fréchet Inception Distance, the value `python -m pytorch_fid` prints, computed faster.

    python -m evaluations.fid A B [--dims 2048] [--batch-size 50] [--device cuda]
    python -m evaluations.fid --save-stats SRC DST.npz
    torchrun --nproc_per_node 4 -m evaluations.fid samples.npz fid_stats_cifar10_train.npz

A and B are each an image folder (the files directly inside it with pytorch-fid's extensions,
read with PIL as RGB, as pytorch-fid does), a samples npz (`arr_0` uint8 N,H,W,C) or a
statistics npz (`mu`, `sigma`). Features come from pytorch-fid's own InceptionV3. What differs:

- statistics accumulate in float64 as a sum and X^T X on the features' device (the GPU's
  matrix unit forms X^T X; only mu and sigma come back to the host, once), so no feature matrix
  is ever held and no batch is copied to the host;
- feature extraction is split over ranks (plain process, mpiexec or torchrun) by whole
  batches, so every image sees the same batch as in one process and the result does not depend
  on the number of ranks beyond float64 summation order;
- the Fréchet distance avoids `scipy.linalg.sqrtm` (see evaluations.frechet);
- `--inception_weights PATH` for machines without internet; bad input is one line, exit 2.
"""

import os

import numpy as np
import torch
from PIL import Image
from pytorch_fid.fid_score import IMAGE_EXTENSIONS
from torch.nn.functional import adaptive_avg_pool2d
from tqdm import tqdm

from trainkit import dist, npz, run
from trainkit.errors import UserError

from . import inception
from .frechet import frechet_distance

__all__ = ["frechet_distance", "statistics_of_path", "statistics_of_images", "fid_of_paths", "list_images"]


# --- inputs -------------------------------------------------------------------------------

def list_images(folder: str) -> list:
    """pytorch-fid's selection: files directly in `folder` with a lower-case image extension, sorted."""
    names = [n for n in os.listdir(folder) if os.path.splitext(n)[1][1:] in IMAGE_EXTENSIONS]
    return sorted(os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n)))


def input_kind(path: str) -> str:
    """'folder', 'samples' or 'stats' (a pytorch-fid npz or DDGAN's .npy); UserError for anything else."""
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        return "folder"
    if path.endswith(".npy"):
        npz.read_stats(path)  # DDGAN's statistics dict, or a one-line error naming the file
        return "stats"
    if not path.endswith(".npz"):
        raise UserError(f"{path}: not an image folder, an .npz file or DDGAN's .npy statistics")
    return "stats" if npz.is_stats(path) else "samples"


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes one file as pytorch-fid does (PIL, RGB). A failure comes back as a message instead
    of an exception, so the main process can name the file on one line (exceptions raised in
    DataLoader workers arrive wrapped in a multi-line traceback)."""

    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path = self.files[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except Exception as e:
            return torch.zeros(3, self.size[1], self.size[0], dtype=torch.uint8), f"{path}: cannot read image ({e})"
        if im.size != self.size:
            return (torch.zeros(3, self.size[1], self.size[0], dtype=torch.uint8),
                    f"{path}: image is {im.size[0]}x{im.size[1]} but {os.path.basename(self.files[0])} is "
                    f"{self.size[0]}x{self.size[1]}; all images must have one size")
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1), ""


class _ArrayImages(torch.utils.data.Dataset):
    def __init__(self, images):  # uint8 N,H,W,C with C in {1, 3}
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
        return x.expand(3, -1, -1) if x.shape[0] == 1 else x, ""  # PIL's convert("RGB") of "L"


def _first_size(files):
    try:
        with Image.open(files[0]) as im:
            return im.size
    except Exception as e:
        raise UserError(f"{files[0]}: cannot read image ({e})") from None


# --- statistics ---------------------------------------------------------------------------

def _default_workers():
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(8, max(cpus // dist.world_size(), 1))  # pytorch-fid: min(8, cpus), shared by ranks


class DeviceStats:
    """Mean and covariance of feature rows seen in batches, accumulated where the rows are.

    The same float64 sum and X^T X as `frechet.RunningStats` (so the same numbers up to
    summation order), kept as tensors on `device`: a GPU's features never make the round trip
    to the host per batch, and the d x d update runs on the device. `reduce()` sums over ranks
    (one all-reduce of one packed tensor); `mean_cov()` returns numpy (mu, sigma), the only
    transfer. MPS has no float64, so there the accumulators live on the CPU.
    """

    def __init__(self, dims: int, device="cpu"):
        device = torch.device(device)
        self.device = torch.device("cpu") if device.type == "mps" else device
        self.dims = int(dims)
        # count, sum and X^T X in one buffer, so the reduction over ranks is one collective
        self._packed = torch.zeros(1 + self.dims + self.dims * self.dims, dtype=torch.float64, device=self.device)
        self.total = self._packed[1 : 1 + self.dims]
        self.gram = self._packed[1 + self.dims :].view(self.dims, self.dims)

    @property
    def count(self) -> int:
        return int(round(float(self._packed[0])))

    def update(self, features):
        """Add the rows of `features` (a tensor, any float dtype, N x dims)."""
        x = features.detach().reshape(-1, self.dims).to(self.device, torch.float64)
        self._packed[0] += x.shape[0]
        self.total += x.sum(dim=0)
        self.gram.addmm_(x.T, x)

    def reduce(self):
        """Replace the accumulators by their sums over ranks. Collective."""
        self._packed.copy_(dist.all_reduce_sum(self._packed))

    def mean_cov(self):
        """(mu, sigma) as float64 numpy arrays, sigma the unbiased covariance (`np.cov(rowvar=False)`)."""
        n = self.count
        if n < 2:
            raise ValueError(f"statistics need at least 2 samples, got {n}")
        mu = self.total / n
        sigma = (self.gram - n * torch.outer(mu, mu)) / (n - 1)
        sigma = 0.5 * (sigma + sigma.T)
        return mu.cpu().numpy(), sigma.cpu().numpy()


def statistics_of_dataset(dataset, model, dims, batch_size=50, device="cpu", num_workers=None,
                          desc="features") -> tuple:
    """(mu, sigma) of the model's `dims` features over `dataset`. Collective over ranks.

    Global batches are consecutive runs of `batch_size` items; rank r takes batches r, r+W, ...
    whole, so every image is run in exactly the batch it would meet in a single process.
    """
    n = len(dataset)
    batch_size = max(1, min(int(batch_size), n))
    num_batches = (n + batch_size - 1) // batch_size
    mine = [list(range(b * batch_size, min((b + 1) * batch_size, n)))
            for b in range(dist.rank(), num_batches, dist.world_size())]
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=mine, num_workers=_default_workers() if num_workers is None else num_workers)
    stats = DeviceStats(dims, device)
    error = ""
    with torch.no_grad():
        quiet = None if dist.is_main() else True
        for images, messages in tqdm(loader, total=len(mine), desc=desc, disable=quiet, leave=False):
            error = next((m for m in messages if m), "")
            if error:
                break
            x = images.to(device).float().div_(255.0)  # torchvision's ToTensor, as pytorch-fid
            features = model(x)[0]
            if features.shape[2] != 1 or features.shape[3] != 1:
                features = adaptive_avg_pool2d(features, output_size=(1, 1))
            stats.update(features.squeeze(3).squeeze(2))
    # Every rank must reach the reductions, so an error is shared rather than raised early.
    errors = [e for e in dist.all_gather_object(error) if e]
    if errors:
        raise UserError(errors[0])
    stats.reduce()
    return stats.mean_cov()


class FeatureModel:
    """Lazily built Inception, shared by the two inputs of one FID computation."""

    def __init__(self, dims=2048, weights=None, device=None):
        if dims not in inception.DIMS:
            raise UserError(f"--dims {dims}: must be one of {', '.join(map(str, inception.DIMS))}")
        self.dims, self.weights, self._model = dims, weights, None
        self.device = torch.device(device) if device else dist.device()

    def get(self):
        if self._model is None:
            path = ensure_weights(self.weights)
            self._model = inception.build_inception(self.dims, path, self.device)
        return self._model


def ensure_weights(weights=None) -> str:
    """The Inception weights file: `weights` as given, else the default one, fetched when missing.
    Collective without `weights` (every rank must call it): rank 0 alone downloads (concurrent
    writes to the hub cache would collide) and the outcome is broadcast, so that every rank fails
    alike when offline. Code that runs on one rank (the training loop's quality probe) calls it
    on every rank beforehand and passes the path on, so that nothing there is collective."""
    if weights:
        return weights
    path = inception.default_weights_path()
    message = ""
    if dist.is_main() and not os.path.isfile(path):
        with dist.rank_zero_only("fid: download weights"):
            try:
                inception.download_weights(path)
            except UserError as e:
                message = str(e)
    message = dist.broadcast_object(message)
    if message:
        raise UserError(message)
    return path


def statistics_of_images(images, model: FeatureModel, batch_size=50, num_workers=0, desc="features"):
    """(mu, sigma) of uint8 N,H,W,C images (C 1 or 3). Collective."""
    npz.check_images(np.asarray(images), desc)
    return statistics_of_dataset(_ArrayImages(images), model.get(), model.dims, batch_size, model.device,
                                 num_workers, desc)


def statistics_of_path(path, model: FeatureModel, batch_size=50, num_workers=None):
    """(mu, sigma) of an image folder, a samples npz or a statistics npz. Collective."""
    kind = input_kind(path)
    if kind == "stats":
        mu, sigma = npz.read_stats(path)
        return mu, sigma
    if kind == "samples":
        images, _ = npz.read_samples(path)
        if len(images) < 2:
            raise UserError(f"{path}: {len(images)} image; FID statistics need at least 2")
        return statistics_of_images(images, model, batch_size, 0, os.path.basename(path))
    files = list_images(path)
    if not files:
        raise UserError(f"{path}: no images directly in this folder (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if len(files) < 2:
        raise UserError(f"{path}: {len(files)} image; FID statistics need at least 2")
    dataset = _ImageFiles(files, _first_size(files))
    return statistics_of_dataset(dataset, model.get(), model.dims, batch_size, model.device, num_workers,
                                 os.path.basename(os.path.normpath(path)))


def fid_of_paths(path_a, path_b, dims=2048, batch_size=50, device=None, num_workers=None, weights=None) -> float:
    """FID between two inputs, each a folder, a samples npz or a statistics npz. Collective."""
    model = FeatureModel(dims, weights, device)
    paths = (path_a, path_b)
    kinds = [input_kind(p) for p in paths]  # a bad second path fails before minutes on the first
    stats = [npz.read_stats(p) if k == "stats" else None for p, k in zip(paths, kinds)]
    if "stats" in kinds and kinds != ["stats", "stats"]:
        p, (mu, _) = next((p, s) for p, s in zip(paths, stats) if s is not None)
        if len(mu) != dims:
            raise UserError(f"{p}: statistics have {len(mu)} dimensions but --dims is {dims}")
    stats = [s if s is not None else statistics_of_path(p, model, batch_size, num_workers)
             for p, s in zip(paths, stats)]
    (mu1, s1), (mu2, s2) = stats
    if len(mu1) != len(mu2):
        raise UserError(f"{path_a} has {len(mu1)}-dimensional statistics but {path_b} has {len(mu2)}")
    try:
        return frechet_distance(mu1, s1, mu2, s2)
    except ValueError as e:
        raise UserError(f"{path_a}, {path_b}: {e}") from None


def save_statistics(src, dst, dims=2048, batch_size=50, device=None, num_workers=None, weights=None):
    """pytorch-fid's --save-stats: statistics of SRC written to DST (refused if DST exists). Collective."""
    if os.path.exists(dst):
        raise UserError(f"{dst}: output file exists")
    if input_kind(src) == "stats":
        raise UserError(f"{src}: already a statistics file")
    mu, sigma = statistics_of_path(src, FeatureModel(dims, weights, device), batch_size, num_workers)
    if dist.is_main():
        with dist.rank_zero_only("fid: write statistics"):
            npz.write_stats(dst, mu, sigma)
    dist.barrier()
    return mu, sigma


# --- command line ---------------------------------------------------------------------------

def build_parser():
    p = run.ArgumentParser(description="FID between two image folders / samples npz / statistics npz "
                                       "(pytorch-fid's numbers, streaming, over ranks)")
    # --batch-size stays a plain int: main's one-line message ("--batch-size 0: ...") is pinned by tests
    p.add_argument("--batch-size", type=int, default=50, help="images per rank per Inception batch (>= 1)")
    p.add_argument("--num-workers", type=run.NONNEG_INT, default=None,
                   help="data loading processes per rank; 0: load in the main process (default: min(8, cpus))")
    p.add_argument("--device", type=str, default=None,
                   help="like cuda, cuda:0 or cpu (default: this rank's GPU, else cpu)")
    p.add_argument("--dims", type=int, default=2048, choices=list(inception.DIMS),
                   help="feature dimension, which picks the Inception block (2048: the pool features FID uses)")
    p.add_argument("--save-stats", action="store_true", help="write the statistics of the first path to the second")
    p.add_argument("--inception_weights", default="",
                   help=f"local {inception.WEIGHTS_NAME} (default: $TORCH_HOME/hub/checkpoints/, downloaded if absent)")
    p.add_argument("--dist_timeout", type=run.POSITIVE_FLOAT, default=None,
                   help="seconds a collective waits for a peer before failing "
                        "(default: $TRAINKIT_DIST_TIMEOUT or 1800)")
    p.add_argument("path", type=str, nargs=2, help="image folders, samples .npz or statistics .npz")
    return p


@run.main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    dist.init(args.dist_timeout)
    kwargs = dict(dims=args.dims, batch_size=args.batch_size, device=args.device,
                  num_workers=args.num_workers, weights=args.inception_weights or None)
    if args.save_stats:
        save_statistics(args.path[0], args.path[1], **kwargs)
        if dist.is_main():
            with dist.rank_zero_only("fid: saved line"):
                print(f"Saved statistics of {args.path[0]} to {args.path[1]}")
        return
    value = fid_of_paths(args.path[0], args.path[1], **kwargs)
    if dist.is_main():
        with dist.rank_zero_only("fid: FID line"):
            print("FID: ", value)  # pytorch-fid's output line, so scripts that parse it keep working


if __name__ == "__main__":
    main()
