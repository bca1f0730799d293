"""evaluations.metrics against closed forms: KID of one law ~ 0, precision = recall = 1 for one
set, half the clusters -> recall 1/2 and precision 1, Inception Score 1 and K for known logits,
a bootstrap std that shrinks with the sample count; then the command line on digits."""

import json

import numpy as np
import pytest

import helpers
from evaluations import metrics
from trainkit.errors import UserError


def test_kid_of_two_samples_of_one_law_is_zero_within_its_error_bar():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    mean, std = metrics.kid(a, b, subsets=50, subset_size=200)
    assert abs(mean) < 3 * std and std > 0
    shifted, _ = metrics.kid(a, b + 1.0, subsets=20, subset_size=200)
    assert shifted > 100 * std  # and it sees a shift of the mean


def test_kid_matches_the_unbiased_mmd_formula_on_one_subset():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) + 0.5
    def k(a, b):
        return (a @ b.T / 3 + 1) ** 3
    expected = ((k(x, x).sum() - np.trace(k(x, x))) / 20 + (k(y, y).sum() - np.trace(k(y, y))) / 20
                - 2 * k(x, y).mean())
    mean, std = metrics.kid(x, y, subsets=1, subset_size=5)  # the whole sets: the order does not matter
    assert mean == pytest.approx(expected, rel=1e-12) and std == 0.0


def test_precision_and_recall_of_a_set_against_itself_are_one():
    x = np.random.default_rng(2).normal(size=(300, 5))
    assert metrics.precision_recall(x, x, k=3) == (1.0, 1.0)


def test_half_the_clusters_gives_recall_one_half_and_precision_one():
    rng = np.random.default_rng(3)
    centres = np.stack([np.arange(10) * 100.0, np.zeros(10)], axis=1)  # ten clusters far apart
    real = np.concatenate([c + rng.normal(size=(200, 2)) for c in centres])
    fake = np.concatenate([c + rng.normal(size=(400, 2)) for c in centres[:5]])
    precision, recall = metrics.precision_recall(real, fake, k=3)
    # k-NN balls cover a law's mass up to its thin tails: about 0.97 of it here
    assert precision == pytest.approx(1.0, abs=0.05)
    assert recall == pytest.approx(0.5, abs=0.03)
    # a collapsed generator (every sample at one point) has recall near 0
    _, collapsed = metrics.precision_recall(real, fake[:1] + 1e-6 * rng.normal(size=(100, 2)))
    assert collapsed < 0.05


def test_inception_score_is_one_for_constant_and_k_for_confident_uniform_predictions():
    constant = np.tile([2.0, -1.0, 0.5, 3.0], (100, 1))
    mean, std = metrics.inception_score(constant, splits=10)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    k = 7
    confident = np.full((700, k), -1e4)
    confident[np.arange(700), np.arange(700) % k] = 1e4  # one-hot, every class equally often
    mean, std = metrics.inception_score(confident, splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_the_bootstrap_std_of_fd_shrinks_as_the_sample_count_grows():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(4000, 6))
    stds = [metrics.fd_bootstrap(ref, rng.normal(size=(n, 6)), rounds=60, seed=1)[1] for n in (100, 400, 1600)]
    assert stds[0] > stds[1] > stds[2] > 0
    assert stds[0] / stds[2] > 2.5  # about sqrt(16) = 4 for a statistic of this kind


def test_too_few_images_is_one_line():
    with pytest.raises(UserError, match="needs more than 3 images"):
        metrics.precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
    with pytest.raises(UserError, match="--metrics 'fd,xx'"):
        metrics.parse_metrics("fd,xx")


def test_command_line_on_digits_caches_the_reference_and_writes_json(digits, tmp_path):
    train, test = digits(16), digits(16, "test")
    samples = tmp_path / "test.npz"
    assert helpers.py("evaluations.images_to_npz", test, samples).returncode == 0
    proc = helpers.py("evaluations.metrics", samples, train, "--bootstrap", 10, "--kid_subsets", 10,
                      "--kid_subset_size", 200)
    assert proc.returncode == 0, helpers.describe(proc)
    names = [line.split(":")[0].split()[0] for line in proc.stdout.splitlines()]
    assert names == ["fd", "kid", "precision", "recall", "is", "wrote"], proc.stdout
    result = json.loads((tmp_path / "test.npz.metrics.json").read_text())
    # real held-out digits against the real train digits: high fidelity and diversity, KID 0
    # within its error bar
    assert result["precision"] > 0.8 and result["recall"] > 0.8
    assert abs(result["kid"][0]) < 3 * result["kid"][1] and result["fd"][1] > 0
    assert 5 < result["is"][0] <= 10  # ten classes, classified confidently
    cache = train.parent / "train.digits-features.npz"
    assert cache.exists()
    stamp = cache.stat().st_mtime_ns
    again = helpers.py("evaluations.metrics", samples, train, "--metrics", "pr", "--json", tmp_path / "pr.json")
    assert again.returncode == 0 and cache.stat().st_mtime_ns == stamp  # read from the cache
    assert json.loads((tmp_path / "pr.json").read_text()).keys() >= {"precision", "recall"}
    bad = helpers.py("evaluations.metrics", samples, tmp_path / "nowhere")
    assert bad.returncode == 2 and len(helpers.error_lines(bad)) == 1 and "nowhere: no such file" in bad.stderr


def test_inception_logits_are_pool_features_times_the_fc_weight_without_its_bias(monkeypatch):
    """The standard IS (openai's pool3 x W, torch-fidelity's logits_unbiased) leaves the fc bias
    out: with a fixed fake network and fc, the logits equal features @ W.T whatever the bias."""
    import torch

    from evaluations import fid, inception

    class Pool(torch.nn.Module):  # "pool features": each channel's mean, spread over 2048 dims
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.arange(1.0, 2049.0).reshape(1, 2048, 1, 1) / 2048)

        def forward(self, x):
            return [x.mean(dim=(1, 2, 3), keepdim=True) * self.w]

    rng = np.random.default_rng(0)
    weight = torch.from_numpy(rng.normal(size=(1008, 2048)))
    state = {"fc.weight": weight, "fc.bias": torch.full((1008,), 100.0)}
    monkeypatch.setattr(fid.FeatureModel, "get", lambda self: Pool())
    monkeypatch.setattr(inception, "load_weights", lambda path: state)
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    feats, logits = metrics.Extractor("inception", inception_weights="fake.pth")(images)
    assert feats.shape == (4, 2048) and logits.shape == (4, 1008)
    np.testing.assert_allclose(logits, feats @ weight.numpy().T, rtol=1e-12)


def test_kids_error_bar_is_calibrated_over_disjoint_halves_of_one_set():
    """Two disjoint halves of sklearn's digits are two draws of one law: KID / std over 20
    random splits is a z-score with mean near 0 and a spread near 1 (conservative for one law).
    Subsets as large as a half are that half every time, and the std was 23x too small."""
    from evaluations import digits_features

    feats = digits_features.features(digits_features.digits_images("train", 16)[0])
    z = []
    for seed in range(20):
        order = np.random.default_rng(seed).permutation(len(feats))
        half = len(feats) // 2
        mean, std = metrics.kid(feats[order[:half]], feats[order[half:]], seed=seed)
        z.append(mean / std)
    assert abs(np.mean(z)) < 0.5 and 0.5 < np.std(z, ddof=1) < 2


def test_kids_error_bar_is_the_spread_of_the_estimate_between_draws_of_two_laws():
    """For two different laws the std from one draw's subsets matches the std of KID between
    independent draws (a 500-sample set against a 1400-image reference, as in the main job)."""
    means, stds = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        mean, std = metrics.kid(rng.normal(size=(1400, 8)), rng.normal(size=(500, 8)) + 0.15, seed=seed)
        means.append(mean)
        stds.append(std)
    assert 0.7 < np.mean(stds) / np.std(means, ddof=1) < 1.5


def test_recalls_std_is_the_spread_between_draws_of_the_samples():
    """Recall's randomness is the samples': over 30 independent sample sets against one
    reference, the std from one set's halves matches recall's spread; the binomial over the
    reference points (the earlier error bar) is well below it. Precision's std is kept too."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(700, 6))
    recalls, stds = [], []
    for seed in range(30):
        fake = np.random.default_rng(100 + seed).normal(size=(300, 6)) * 0.8 + 0.2
        recalls.append(metrics.precision_recall(real, fake)[1])
        if seed < 6:
            stds.append(metrics.precision_recall_std(real, fake, rounds=30, seed=seed))
    true = np.std(recalls, ddof=1)
    binomial = np.sqrt(np.mean(recalls) * (1 - np.mean(recalls)) / len(real))
    assert binomial < 0.8 * true
    assert 0.7 < np.mean([s[1] for s in stds]) / true < 1.4
    assert all(s[0] > 0 for s in stds)


def _noisy(images, std, seed=0):
    """uint8 images plus Gaussian noise of `std` in the [0, 1] pixel range, clipped."""
    x = images / 255.0 + np.random.default_rng(seed).normal(0, std, images.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def test_the_digits_feature_rms_constant_is_the_networks():
    """FEATURE_RMS, which KID divides the digits features by, is recomputed from the network
    (so a retrained network cannot leave it stale). The classifier is trained on the host, and
    its float kernels differ between CPUs in the last bits: 8.309 on an Intel Xeon, 8.203 on an
    AMD EPYC (both AVX-512), so the tolerance is 3%: a scale, not a fingerprint."""
    from evaluations import digits_features

    assert digits_features.feature_rms("train", 16) == pytest.approx(digits_features.FEATURE_RMS, rel=0.03)
    assert metrics.Extractor("digits").kid_scale == 1 / digits_features.FEATURE_RMS


def test_digits_kid_is_computed_on_features_divided_by_their_rms(tmp_path):
    """The digits against the same digits with pixel noise of std 0.3: KID of the raw features
    (norms near 66, a kernel of ~3e5) is in the thousands; the digits space's KID, through
    evaluate's Extractor, is kid() of the features divided by FEATURE_RMS, below 10 (about 0.05)."""
    from evaluations import digits_features
    from trainkit import npz

    images = digits_features.digits_images("train", 16)[0]
    ref_path = npz.write_samples(str(tmp_path), images)
    noisy = _noisy(images, 0.3)
    result = metrics.evaluate(noisy, ref_path, metrics=("kid",), kid_subsets=20, seed=0)
    ref_feats, feats = digits_features.features(images), digits_features.features(noisy)
    raw = metrics.kid(ref_feats, feats, subsets=20, seed=0)
    scaled = metrics.kid(ref_feats / digits_features.FEATURE_RMS, feats / digits_features.FEATURE_RMS,
                         subsets=20, seed=0)
    assert raw[0] > 1000
    assert result["kid"] == pytest.approx(list(scaled), rel=1e-9)
    assert 0 < result["kid"][0] < 10 and result["kid"][0] > 3 * result["kid"][1]  # still sees the noise
    assert result["kid_feature_scale"] == pytest.approx(1 / digits_features.FEATURE_RMS)


def test_evaluate_features_scales_kids_features_only():
    """kid_scale multiplies both feature sets before KID; FD, precision/recall and IS are those
    of the features as they are."""
    rng = np.random.default_rng(5)
    ref, feats = rng.normal(size=(120, 6)) * 4, rng.normal(size=(100, 6)) * 4 + 1
    logits = rng.normal(size=(100, 10))
    kw = dict(bootstrap=5, kid_subsets=10, kid_subset_size=40, splits=5, seed=3)
    plain = metrics.evaluate_features(ref, feats, logits, **kw)
    s = 0.25
    scaled = metrics.evaluate_features(ref, feats, logits, kid_scale=s, **kw)
    assert scaled["kid"] == list(metrics.kid(ref * s, feats * s, 10, 40, 3))
    assert scaled["kid"] != plain["kid"]
    for key in ("fd", "precision", "recall", "precision_std", "recall_std", "is"):
        assert scaled[key] == plain[key], key


def test_inception_kid_is_printed_times_a_thousand_and_digits_kid_as_it_is():
    result = {"kid": [0.0123456, 0.0007], "features": "inception"}
    assert metrics.format_lines(result) == ["kid ×10³: 12.3456 ± 0.7000 (std from half-set subsets)"]
    result["features"] = "digits"
    assert metrics.format_lines(result) == ["kid: 0.012346 ± 0.000700 (std from half-set subsets)"]


def test_class_recalls_std_is_zero_for_a_repeated_image_and_none_for_a_tiny_class():
    """The within-class error bar the collapse rule uses: a class whose samples are one point
    has recall 0 in every half (std 0); a class of fresh draws has a spread; a class with too few
    samples for a half to have k neighbours has none."""
    rng = np.random.default_rng(0)
    real, real_labels = rng.normal(size=(300, 4)), np.repeat([0, 1, 2], 100)
    fake = np.concatenate([np.repeat(rng.normal(size=(1, 4)), 60, axis=0), rng.normal(size=(60, 4)),
                           rng.normal(size=(6, 4))])
    labels = np.repeat([0, 1, 2], [60, 60, 6])
    stds = metrics.class_recall_std(real, real_labels, fake, labels, rounds=20)
    assert stds[0] == 0.0 and stds[1] > 0.01 and stds[2] is None
    assert metrics.class_recall(real, real_labels, fake, labels)[0] < 0.05
