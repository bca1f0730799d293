"""Fidelity and diversity apart, with error bars, in a feature space.

    python -m evaluations.metrics SAMPLES REF [--metrics fd,kid,pr,is] [--features digits|inception]

SAMPLES and REF are samples npz files or image folders. One line per metric is printed and all
of them are written to a JSON file (`--json`, default beside SAMPLES). The reference's features
are computed once and cached beside it (`REF.<features>-features.npz`, keyed by the files' names,
sizes and times, so an edited reference is computed again).

- **fd**: Fréchet distance, with the std of `--bootstrap` resamples of the samples (with
  replacement): how much the figure moves with the draw of the samples.
- **kid**: Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD² with the cubic
  polynomial kernel k(x, y) = (x·y / d + 1)³, the mean over `--kid_subsets` subsets of
  `--kid_subset_size` samples from each side, at most half of the smaller set so that the
  subsets differ; the std is their spread scaled to the whole set's estimate (see `kid`).
  Unbiased: about 0 for two samples of one law. The features are first multiplied by the
  feature space's `Extractor.kid_scale`: 1 for Inception, whose pool features are of order
  0.1-1, and 1 / digits_features.FEATURE_RMS for the digits CNN, whose features have norms near
  66 (a kernel of ~3e5 and KIDs in the thousands), so that x·y / d is of order 1 in both.
  Inception KID is printed ×10³ (the field's convention, "kid ×10³"), digits KID as it is; the
  JSON holds the MMD² itself (of the scaled features) in both, beside `kid_feature_scale`.
- **pr**: improved precision and recall (Kynkäänniemi et al. 2019) with k = `--k` (3): each
  set's manifold is the union of balls around its points reaching their k-th nearest
  neighbour; precision is the share of samples inside the reference's manifold (fidelity),
  recall the share of reference points inside the samples' (diversity: a collapsed generator
  has recall near 0).
- **is**: Inception Score, exp(E_x KL(p(y|x) || p(y))), mean ± std over `--splits` (10) splits,
  from the classifier's logits: Inception's 1008-way ones (pool features times the weight of
  the fc layer that pytorch-fid's weights file carries, without its bias, as openai's and
  torch-fidelity's IS), or the digits classifier's 10-way ones.

Features: `digits` (offline, the 64-d penultimate layer of evaluations.digits_features' CNN) or
`inception` (pytorch-fid's 2048-d pool features; `--inception_weights` for offline machines).
"""

import hashlib
import json
import math
import os

import numpy as np
import torch

from trainkit import fileio, npz, run
from trainkit.errors import UserError

from .frechet import frechet_distance_of_samples

METRICS = ("fd", "kid", "pr", "is")
FEATURES = ("digits", "inception")


# --- the metrics, on feature arrays -----------------------------------------------------------

def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def mean_cov(features):
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def fd_bootstrap(ref_features, features, rounds=50, seed=0):
    """(FD, std of FD over `rounds` resamples with replacement of `features`)."""
    mu_r, sigma_r = mean_cov(ref_features)
    f = np.asarray(features, dtype=np.float64)
    value = frechet_distance_of_samples(f, mu_r, sigma_r)
    rng = np.random.default_rng(seed)
    draws = [frechet_distance_of_samples(f[rng.integers(0, len(f), len(f))], mu_r, sigma_r) for _ in range(rounds)]
    return float(value), float(np.std(draws, ddof=1)) if rounds > 1 else 0.0


def _polynomial_kernel(x, y):
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(ref_features, features, subsets=100, subset_size=1000, seed=0):
    """(mean, std) of the unbiased MMD² with the cubic polynomial kernel over random subsets."""
    x_all, y_all = _t(ref_features), _t(features)
    m = min(subset_size, len(x_all), len(y_all))
    if subsets > 1:
        # Subsets as large as a set are that set every time: their std is 0 or only the other
        # side's. At most half of the smaller set, the subsets differ, and their spread measures
        # how the estimate moves with the draw of the images.
        m = min(m, min(len(x_all), len(y_all)) // 2)
    if m < 2:
        raise UserError(f"KID needs at least 2 images on each side, got {len(y_all)} and {len(x_all)}")
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = x_all[torch.randperm(len(x_all), generator=g)[:m]]
        y = y_all[torch.randperm(len(y_all), generator=g)[:m]]
        kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        off = m * (m - 1)
        values.append(float((kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off
                            - 2 * kxy.mean()))
    if subsets == 1:
        return float(values[0]), 0.0
    # The spread over subsets of m of the n images measures how the estimate moves with the draw
    # of the images. Drawn from a fixed set, the subsets overlap (a finite-population factor
    # 1 - m/n), and a whole set's estimate varies as 1/n where one of m varies as 1/m (two
    # different laws): sqrt(m / (n - m)) turns the one into the other, 1 at half the set. For one
    # law the variance falls as 1/n², so there the bar is conservative.
    n = min(len(x_all), len(y_all))
    std = float(np.std(values, ddof=1)) * math.sqrt(m / (n - m))
    return float(np.mean(values)), std


def _knn_radii(x, k, block=2048):
    """Distance of each point of x to its k-th nearest other point."""
    radii = []
    for i in range(0, len(x), block):
        d = torch.cdist(x[i:i + block], x)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # the 1st is the point itself, at 0
    return torch.cat(radii)


def _inside(points, centres, radii, block=2048):
    """For each point: whether it lies in some ball (centre, radius)."""
    out = []
    for i in range(0, len(points), block):
        out.append((torch.cdist(points[i:i + block], centres) <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(ref_features, features, k=3):
    """(precision, recall) of `features` against `ref_features` (Kynkäänniemi et al. 2019)."""
    real, fake = _t(ref_features), _t(features)
    if min(len(real), len(fake)) <= k:
        raise UserError(f"precision/recall with k = {k} needs more than {k} images on each side, "
                        f"got {len(fake)} and {len(real)}")
    precision = _inside(fake, real, _knn_radii(real, k)).double().mean()
    recall = _inside(real, fake, _knn_radii(fake, k)).double().mean()
    return float(precision), float(recall)


def class_recall(ref_features, ref_labels, features, labels, k=3) -> dict:
    """{class: recall of the samples of that class against the real images of that class}, for
    class-conditional samples: a generator that draws one image per class has a fine overall
    recall (each class's image lands near its class) but near 0 within every class. A class with
    k or fewer images on either side gets None."""
    ref_labels, labels = np.asarray(ref_labels), np.asarray(labels)
    out = {}
    for c in sorted(set(ref_labels.tolist()) | set(labels.tolist())):
        real, fake = np.asarray(ref_features)[ref_labels == c], np.asarray(features)[labels == c]
        out[int(c)] = precision_recall(real, fake, k)[1] if min(len(real), len(fake)) > k else None
    return out


def class_recall_std(ref_features, ref_labels, features, labels, k=3, rounds=50, seed=0) -> dict:
    """{class: std of class_recall's figure between draws of that class's samples} (random
    halves, as precision_recall_std); None where a class's half has k or fewer samples. The
    verdict's within-class collapse rule takes these error bars into account."""
    ref_labels, labels = np.asarray(ref_labels), np.asarray(labels)
    out = {}
    for c in sorted(set(ref_labels.tolist()) | set(labels.tolist())):
        real, fake = np.asarray(ref_features)[ref_labels == c], np.asarray(features)[labels == c]
        std = precision_recall_std(real, fake, k, rounds, seed)[1] if len(real) > k else float("nan")
        out[int(c)] = std if math.isfinite(std) else None
    return out


def precision_recall_std(ref_features, features, k=3, rounds=50, seed=0):
    """(std of precision, std of recall) between draws of the samples, from `rounds` random
    halves of them. Recall's randomness comes from the samples, whose balls define the manifold,
    so a binomial over the reference points understates it (about half, tests/unit/test_eval_metrics.py);
    a bootstrap's repeated points would have a neighbour at distance 0 and shrink their balls.
    The spread of a mean over halves drawn from a fixed set is the whole set's std (the
    finite-population factor 1 - m/n is 1/2), and that holds for recall too in simulation."""
    real, fake = _t(ref_features), _t(features)
    m = len(fake) // 2
    if m <= k or rounds < 2:
        return float("nan"), float("nan")  # too few samples for a half to have k neighbours
    in_real = _inside(fake, real, _knn_radii(real, k)).double()  # the real balls do not move
    g = torch.Generator().manual_seed(seed)
    ps, rs = [], []
    for _ in range(rounds):
        idx = torch.randperm(len(fake), generator=g)[:m]
        half = fake[idx]
        ps.append(float(in_real[idx].mean()))
        rs.append(float(_inside(real, half, _knn_radii(half, k)).double().mean()))
    return float(np.std(ps, ddof=1)), float(np.std(rs, ddof=1))


def inception_score(logits, splits=10):
    """(mean, std) over `splits` of exp(E_x KL(p(y|x) || p(y))) from classifier logits."""
    logits = _t(logits)
    if len(logits) < splits:
        raise UserError(f"Inception Score over {splits} splits needs at least {splits} images, got {len(logits)}")
    scores = []
    for part in torch.tensor_split(logits, splits):
        log_p = torch.log_softmax(part, dim=1)
        log_py = torch.logsumexp(log_p, dim=0) - math.log(len(part))  # log of the split's mean p(y)
        kl = (log_p.exp() * (log_p - log_py)).sum(1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


# --- features of images -----------------------------------------------------------------------

class Extractor:
    """Features and logits of uint8 N,H,W,C images in one feature space.

    kid_scale: what KID multiplies the features by (see `evaluate_features`): 1 for Inception's
    pool features, 1 / digits_features.FEATURE_RMS for the digits CNN's, so that the kernel's
    argument x·y / d is of order 1 in both spaces."""

    def __init__(self, kind="digits", inception_weights=None, batch_size=50):
        if kind not in FEATURES:
            raise UserError(f"--features {kind!r}: choose {' or '.join(FEATURES)}")
        self.kind, self.weights, self.batch_size = kind, inception_weights, batch_size
        self._net = None
        if kind == "digits":
            from . import digits_features

            self.kid_scale = 1.0 / digits_features.FEATURE_RMS
        else:
            self.kid_scale = 1.0

    def __call__(self, images):
        """(features N,d float64, logits N,classes float64)."""
        if self.kind == "digits":
            from . import digits_features

            self._net = self._net or digits_features.load_classifier()
            return digits_features.features(images, self._net), digits_features.logits(images, self._net)
        return self._inception(images)

    def _inception(self, images):
        from . import fid, inception

        if self._net is None:
            net = fid.FeatureModel(2048, self.weights).get()  # fetches the weights when missing
            state = inception.load_weights(self.weights or inception.default_weights_path())
            # pytorch-fid keeps only the blocks up to the pool; its weights file also carries
            # torchvision's 1008-way `fc`, which turns the pool features into the logits. The
            # standard IS (openai's pool3 x W, torch-fidelity's logits_unbiased) leaves its bias out.
            self._net = (net, state["fc.weight"].double())
        net, weight = self._net
        feats = []
        x_all = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        if x_all.shape[1] == 1:
            x_all = x_all.repeat(1, 3, 1, 1)  # grey as RGB, as pytorch-fid reads grey images
        with torch.no_grad():
            for i in range(0, len(x_all), self.batch_size):
                x = x_all[i:i + self.batch_size].float().div(255).to(next(net.parameters()).device)
                feats.append(net(x)[0].flatten(1).double().cpu())
        f = torch.cat(feats)
        return f.numpy(), (f @ weight.T).numpy()


def read_images(path):
    """uint8 N,H,W,C images of a samples npz or an image folder."""
    if os.path.isdir(path):
        from .images_to_npz import read_folder

        return read_folder(path)[0]
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or directory")
    return npz.read_samples(path)[0]


def _fingerprint(path):
    """Names, sizes and modification times of the files making up `path`."""
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.relpath(f, path) if f != path else ''}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def reference_features(path, extractor):
    """(features, logits) of the reference, from the cache beside it when it is still current."""
    cache = f"{os.path.normpath(path)}.{extractor.kind}-features.npz"
    key = _fingerprint(path)
    if os.path.isfile(cache):
        try:
            with np.load(cache) as z:
                if str(z["key"]) == key:
                    return z["features"], z["logits"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged or foreign cache is computed again
    feats, logits = extractor(read_images(path))
    with fileio.atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=feats, logits=logits, key=np.array(key))
    return feats, logits


def evaluate(samples, ref, metrics=METRICS, extractor=None, k=3, bootstrap=50, kid_subsets=100,
             kid_subset_size=1000, splits=10, seed=0):
    """{metric: value or [mean, std]} of the images `samples` against the reference path `ref`."""
    extractor = extractor or Extractor()
    ref_feats, _ = reference_features(ref, extractor)
    feats, logits = extractor(np.asarray(samples))
    out = evaluate_features(ref_feats, feats, logits, metrics, k, bootstrap, kid_subsets, kid_subset_size,
                            splits, seed, kid_scale=extractor.kid_scale)
    out["features"] = extractor.kind
    return out


def evaluate_features(ref_feats, feats, logits=None, metrics=METRICS, k=3, bootstrap=50, kid_subsets=100,
                      kid_subset_size=1000, splits=10, seed=0, kid_scale=1.0):
    """The metrics of feature arrays (and the samples' logits, for IS) against reference features.
    KID is computed on both feature sets times `kid_scale` (the feature space's
    `Extractor.kid_scale`); FD, precision/recall and IS use the features as they are."""
    out = {"num_samples": int(len(feats)), "num_reference": int(len(ref_feats))}
    if "fd" in metrics:
        out["fd"] = list(fd_bootstrap(ref_feats, feats, bootstrap, seed))
    if "kid" in metrics:
        scaled = [np.asarray(f, dtype=np.float64) * kid_scale for f in (ref_feats, feats)]
        out["kid"] = list(kid(*scaled, kid_subsets, kid_subset_size, seed))
        out["kid_feature_scale"] = float(kid_scale)
    if "pr" in metrics:
        out["precision"], out["recall"] = precision_recall(ref_feats, feats, k)
        out["precision_std"], out["recall_std"] = precision_recall_std(ref_feats, feats, k, bootstrap, seed)
    if "is" in metrics and logits is not None:
        out["is"] = list(inception_score(logits, splits))
    return out


def kid_display_scale(features) -> int:
    """What KID is multiplied by where a person reads it: 1000 for Inception (the field's
    "KID ×10³"), 1 for the digits space, whose KID is readable as it is (0.05 for the
    digits against themselves with Gaussian pixel noise of std 0.3, docs/evaluations.md)."""
    return 1000 if features == "inception" else 1


def format_lines(result) -> list:
    lines = []
    if "fd" in result:
        lines.append(f"fd: {result['fd'][0]:.4f} ± {result['fd'][1]:.4f} (bootstrap std)")
    if "kid" in result:
        scale = kid_display_scale(result.get("features"))
        label = "kid ×10³" if scale == 1000 else "kid"
        mean, std = result["kid"][0] * scale, result["kid"][1] * scale
        digits = 4 if scale == 1000 else 6
        lines.append(f"{label}: {mean:.{digits}f} ± {std:.{digits}f} (std from half-set subsets)")
    if "precision" in result:
        lines.append(f"precision: {result['precision']:.4f} ± {result['precision_std']:.4f} (std from half-set draws)")
        lines.append(f"recall: {result['recall']:.4f} ± {result['recall_std']:.4f} (std from half-set draws)")
    if "is" in result:
        lines.append(f"is: {result['is'][0]:.4f} ± {result['is'][1]:.4f} (std over splits)")
    return lines


def parse_metrics(text):
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METRICS]
    if bad or not chosen:
        raise UserError(f"--metrics {text!r}: choose from {','.join(METRICS)}")
    return chosen


def create_parser():
    p = run.ArgumentParser(description="Precision/recall, KID, FD with bootstrap std and Inception Score.")
    p.add_argument("samples", help="samples npz or image folder")
    p.add_argument("reference", help="reference npz or image folder (its features are cached beside it)")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma list of fd, kid, pr, is")
    p.add_argument("--features", default="digits", choices=FEATURES,
                   help="feature space: the offline digits CNN, or pytorch-fid's Inception")
    p.add_argument("--inception_weights", default="",
                   help="local pytorch-fid Inception weights for offline machines (default: torch hub's copy)")
    p.add_argument("--k", type=run.POSITIVE_INT, default=3,
                   help="neighbours that set a manifold's radii (precision/recall)")
    p.add_argument("--bootstrap", type=run.POSITIVE_INT, default=50, help="FD resamples for its std")
    p.add_argument("--kid_subsets", type=run.POSITIVE_INT, default=100, help="random subsets KID is averaged over")
    p.add_argument("--kid_subset_size", type=run.POSITIVE_INT, default=1000,
                   help="images per KID subset (capped at the smaller set's size)")
    p.add_argument("--splits", type=run.POSITIVE_INT, default=10, help="Inception Score splits")
    p.add_argument("--seed", type=run.NONNEG_INT, default=0, help="seed of the bootstrap and KID subsets")
    p.add_argument("--json", default="", help="output JSON (empty: SAMPLES with .metrics.json)")
    return p


@run.main
def main(argv=None):
    args = create_parser().parse_args(argv)
    metrics = parse_metrics(args.metrics)
    samples = read_images(args.samples)
    if not os.path.exists(args.reference):
        raise UserError(f"{args.reference}: no such file or directory")
    extractor = Extractor(args.features, args.inception_weights or None)
    result = evaluate(samples, args.reference, metrics, extractor, args.k, args.bootstrap, args.kid_subsets,
                      args.kid_subset_size, args.splits, args.seed)
    result.update(samples=os.path.abspath(args.samples), reference=os.path.abspath(args.reference))
    for line in format_lines(result):
        print(line)
    out = args.json or f"{os.path.normpath(args.samples)}.metrics.json"
    fileio.write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
