"""An offline metric for the embedded digits data set: FD-digits and class accuracy.

Inception features mean little on 8x8 handwritten digits and need a 100 MB download. Instead a
small CNN is trained once on the digits train split (scikit-learn's `load_digits`, split exactly
as `datasets/digits.py` does; fixed seed; a few seconds on CPU) and cached. Its penultimate layer
(64 features) gives a Fréchet distance to the real digits ("FD-digits", same formula as FID);
its predictions give the class accuracy of class-conditional samples.

    python -m evaluations.digits_features samples.npz            # FD-digits (+ accuracy if labelled)
    python -m evaluations.digits_features data/digits/test       # an image folder works too
    python -m evaluations.digits_features --test_accuracy        # the classifier's own accuracy

Python: `fd_digits(images)`, `classify(images)`, `accuracy(images, labels)`,
`reference_stats(split, size)`, `features(images)`, `feature_rms()` — images uint8 N,H,W,C
(C 1 or 3), any size.
Inputs are converted to gray (channel mean) and resized to 16 x 16 (bilinear, antialiased).
"""

import hashlib
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from trainkit import fileio, npz, run
from trainkit.errors import UserError

from .frechet import RunningStats, frechet_distance

INPUT_SIZE = 16
TRAIN_SIZES = (16,)  # export size the classifier is trained on (datasets/digits.py --size); 32 px
# inputs come down to 16 px through `preprocess` and are classified as well (see the tests)
CONFIG = {"version": 1, "seed": 0, "epochs": 20, "batch_size": 64, "lr": 2e-3, "width": 16,
          "test_fraction": 0.2, "split_seed": 0, "input_size": INPUT_SIZE, "train_sizes": list(TRAIN_SIZES)}

# The root-mean-square coordinate of the 64 features over the digits train split at 16 px, the
# network's input and training size and reference_stats' default (`feature_rms()`:
# sqrt(mean(features(digits_images("train", 16)[0]) ** 2)), 8.3093 with the network CONFIG
# trains; tests/unit/test_eval_metrics.py recomputes it to 1%). The test split at 16 px gives 8.33,
# the train split at the native 8 px 7.59 and at 32 px 8.00: within 9% at every export size,
# which is all that KID's use of it needs (evaluations.metrics.Extractor.kid_scale). KID is
# computed on the features divided by it, so that its kernel's argument x·y/d is of order 1 as
# for Inception's pool features (post-ReLU averages of order 0.1-1): on the raw features, whose
# norms are near 66, the cubic kernel is ~3e5 and KID runs into the thousands.
FEATURE_RMS = 8.309


# --- data: the digits exactly as datasets/digits.py exports them ------------------------------

def split_indices(n: int, test_fraction: float, seed: int):
    """datasets/digits.py's split (checked against it in the tests): seeded permutation, the
    first round(n * fraction) indices are the test split."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def digits_images(split: str, size: int):
    """(uint8 N,size,size,1, int64 labels): the images datasets/digits.py writes for `split`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    train, test = split_indices(len(images), CONFIG["test_fraction"], CONFIG["split_seed"])
    idx = {"train": train, "test": test}[split]
    out = np.stack([np.asarray(Image.fromarray(images[i]).resize((size, size), resample=Image.BICUBIC))
                    for i in idx])
    return out[..., None], digits.target[idx].astype(np.int64)


def preprocess(images) -> torch.Tensor:
    """uint8 N,H,W,C -> float N,1,16,16 in [0, 1]."""
    images = np.asarray(images)
    npz.check_images(images, "images")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    x = x.mean(dim=1, keepdim=True)
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x


# --- the network ------------------------------------------------------------------------------

class DigitsNet(torch.nn.Module):
    def __init__(self, width=16, classes=10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = torch.nn.Linear(2 * width * (INPUT_SIZE // 4) ** 2, 64)
        self.head = torch.nn.Linear(64, classes)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x):
        return self.head(self.features(x))


def default_cache_dir() -> str:
    return os.environ.get("GENBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genbench")


def cache_path(cache_dir=None) -> str:
    digest = hashlib.sha256(json.dumps(CONFIG, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cache_dir or default_cache_dir(), f"digits_cnn_{digest}.pt")


def train_classifier() -> DigitsNet:
    """Deterministic for a given machine: fixed seeds, fixed data order."""
    generator = torch.Generator().manual_seed(CONFIG["seed"])
    torch_state = torch.get_rng_state()
    torch.manual_seed(CONFIG["seed"])  # parameter init; the caller's RNG is restored below
    try:
        net = DigitsNet(CONFIG["width"])
    finally:
        torch.set_rng_state(torch_state)
    xs, ys = [], []
    for size in TRAIN_SIZES:
        images, labels = digits_images("train", size)
        xs.append(preprocess(images))
        ys.append(torch.from_numpy(labels))
    x, y = torch.cat(xs), torch.cat(ys)
    optimizer = torch.optim.Adam(net.parameters(), lr=CONFIG["lr"])
    net.train()
    # Ops this small run fastest on one thread, and several threads on a busy machine can be
    # many times slower (spinning workers); one thread also fixes the reduction order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(CONFIG["epochs"]):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), CONFIG["batch_size"]):
                batch = order[start : start + CONFIG["batch_size"]]
                loss = F.cross_entropy(net(x[batch]), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def load_classifier(cache_dir=None) -> DigitsNet:
    """The cached network, trained and cached on first use."""
    path = cache_path(cache_dir)
    net = DigitsNet(CONFIG["width"])
    if os.path.isfile(path):
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net.eval()
        except Exception:  # a stale or damaged cache entry is rebuilt, never trusted
            pass
    net = train_classifier()
    with fileio.atomic_path(path) as tmp:
        torch.save(net.state_dict(), tmp)
    return net


# --- the metric -------------------------------------------------------------------------------

def features(images, net=None, batch_size=500) -> np.ndarray:
    net = net or load_classifier()
    x = preprocess(images)
    with torch.no_grad():
        return torch.cat([net.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()


def logits(images, net=None, batch_size=500) -> np.ndarray:
    """The classifier's 10-way logits (for an Inception-Score-like figure in this space)."""
    net = net or load_classifier()
    x = preprocess(images)
    with torch.no_grad():
        return torch.cat([net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()


def classify(images, net=None) -> np.ndarray:
    net = net or load_classifier()
    with torch.no_grad():
        return net(preprocess(images)).argmax(1).numpy()


def accuracy(images, labels, net=None) -> float:
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise UserError(f"{len(labels)} labels for {len(images)} images")
    return float((classify(images, net) == labels).mean())


def statistics(images, net=None):
    stats = RunningStats(64)
    stats.update(features(images, net))
    return stats.mean_cov()


def feature_rms(split="train", size=INPUT_SIZE, net=None) -> float:
    """The root-mean-square coordinate of the features of the real digits `split` at `size` px
    (FEATURE_RMS is its value for the train split at 16 px)."""
    f = features(digits_images(split, size)[0], net)
    return float(np.sqrt(np.mean(f ** 2)))


def reference_stats(split="train", size=INPUT_SIZE, net=None):
    """(mu, sigma) of the real digits of `split`, exported at `size` px as datasets/digits.py does."""
    return statistics(digits_images(split, size)[0], net)


def fd_digits(images, split="train", net=None) -> float:
    """Fréchet distance between the features of `images` and of the real digits `split` at the
    images' own size (so export resampling is not counted as a difference)."""
    net = net or load_classifier()
    images = np.asarray(images)
    npz.check_images(images, "images")
    if len(images) < 2:
        raise UserError(f"FD-digits needs at least 2 images, got {len(images)}")
    return frechet_distance(*statistics(images, net), *reference_stats(split, images.shape[1], net))


def test_accuracy(net=None, sizes=(16, 32)) -> dict:
    net = net or load_classifier()
    return {size: accuracy(*digits_images("test", size), net=net) for size in sizes}


# --- command line -----------------------------------------------------------------------------

def _read(path):
    if os.path.isdir(path):
        from .images_to_npz import read_folder

        return read_folder(path)
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or directory")
    return npz.read_samples(path)


def create_parser():
    p = run.ArgumentParser(description="FD-digits and class accuracy of digit samples (offline)")
    p.add_argument("samples", nargs="?", help="samples npz or image folder (labels from arr_1 / file names)")
    p.add_argument("--reference", default="train", choices=["train", "test"], help="real digits split to compare with")
    p.add_argument("--cache_dir", default="", help="where the trained classifier is cached (default ~/.cache/genbench)")
    p.add_argument("--test_accuracy", action="store_true", help="print the classifier's accuracy on the test split")
    return p


@run.main
def main(argv=None):
    p = create_parser()
    args = p.parse_args(argv)
    if not args.samples and not args.test_accuracy:
        p.error("give a samples npz / image folder, or --test_accuracy")
    net = load_classifier(args.cache_dir or None)
    if args.test_accuracy:
        for size, acc in test_accuracy(net).items():
            print(f"digits classifier test accuracy at {size}px: {acc:.4f}")
    if args.samples:
        images, labels = _read(args.samples)
        print(f"FD-digits: {fd_digits(images, args.reference, net):.6f}")
        if labels is not None:
            print(f"class accuracy: {accuracy(images, labels, net):.4f}")


if __name__ == "__main__":
    main()
