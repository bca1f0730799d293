"""Fréchet distance against pytorch-fid's function and closed forms; streaming statistics."""

import warnings

import numpy as np
import pytest
from pytorch_fid.fid_score import calculate_frechet_distance

from evaluations.frechet import RunningStats, frechet_distance

# scipy 1.16 deprecates sqrtm's `disp`, which pytorch-fid passes
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def random_spd(rng, d, n=None):
    n = n or 4 * d
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("d", [2, 16, 128, 512])
def test_matches_pytorch_fid_on_spd(d):
    rng = np.random.default_rng(d)
    mu1, s1 = random_spd(rng, d)
    mu2, s2 = random_spd(rng, d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    theirs = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_closed_forms():
    # 1-D: (m1-m2)^2 + (sqrt v1 - sqrt v2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, abs=1e-12)
    # diagonal covariances: per-coordinate sum of the 1-D formula
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(np.zeros(3), np.diag(v1), np.zeros(3), np.diag(v2)) == pytest.approx(expected, abs=1e-12)
    # equal statistics: zero
    rng = np.random.default_rng(0)
    mu, s = random_spd(rng, 32)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9


def test_singular_covariances_give_finite_values():
    rng = np.random.default_rng(1)
    d = 64
    # 10 samples in 64 dimensions: rank 9 covariances, the case that breaks sqrtm
    x1, x2 = rng.standard_normal((10, d)), rng.standard_normal((10, d)) + 0.5
    mu1, s1 = x1.mean(0), np.cov(x1, rowvar=False)
    mu2, s2 = x2.mean(0), np.cov(x2, rowvar=False)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value) and value > 0
    # same singular covariance on both sides: the trace terms cancel exactly
    assert frechet_distance(mu1, s1, mu1 + 1.0, s1) == pytest.approx(d, rel=1e-6)
    # all-zero covariance (a constant feature set) and a rank-1 one
    zero = np.zeros((d, d))
    assert frechet_distance(mu1, zero, mu1, zero) == 0.0
    u = rng.standard_normal(d)
    rank1 = np.outer(u, u)
    assert frechet_distance(mu1, rank1, mu1, zero) == pytest.approx(u @ u, rel=1e-9)
    # pytorch-fid adds 1e-6 I in this case; it should agree to a loose tolerance when it works
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theirs = calculate_frechet_distance(mu1, s1, mu2, s2)
        except ValueError:
            theirs = None  # "Imaginary component": the failure this implementation avoids
    if theirs is not None and np.isfinite(theirs):
        assert value == pytest.approx(theirs, rel=1e-3)


def test_shape_errors_are_one_line():
    with pytest.raises(ValueError, match="different dimensions: 3 and 4"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


def test_running_stats_match_numpy_and_any_split():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((103, 7)) * 3 + 5
    one = RunningStats(7)
    for chunk in np.array_split(x, 9):
        one.update(chunk)
    mu, sigma = one.mean_cov()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)

    # two "ranks" holding disjoint batches, reduced with a plain sum
    ranks = [RunningStats(7), RunningStats(7)]
    for i, chunk in enumerate(np.array_split(x, 9)):
        ranks[i % 2].update(chunk)
    packed = []
    for r in ranks:
        r.reduce(lambda a: packed.append(a) or a)
    total = packed[0] + packed[1]
    for r in ranks:
        r.reduce(lambda a: total)
    mu2, sigma2 = ranks[0].mean_cov()
    np.testing.assert_allclose(mu2, mu, rtol=1e-12)
    np.testing.assert_allclose(sigma2, sigma, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        s = RunningStats(3)
        s.update(np.zeros((1, 3)))
        s.mean_cov()


@pytest.mark.parametrize("n, d", [(5, 40), (39, 40), (200, 40)])
def test_frechet_distance_of_samples_equals_the_covariance_form(n, d):
    # fewer samples than dimensions takes the n x n eigenproblem; more, the d x d one
    from evaluations.frechet import frechet_distance_of_samples

    rng = np.random.default_rng(n)
    ref = rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) * 0.3
    mu2, s2 = ref.mean(0), np.cov(ref, rowvar=False)
    f = rng.normal(size=(n, d)) + 0.5
    expected = frechet_distance(f.mean(0), np.cov(f, rowvar=False), mu2, s2)
    # the d x d form of a singular S1 sums square roots of rounding noise (~1e-8 relative)
    assert frechet_distance_of_samples(f, mu2, s2) == pytest.approx(expected, rel=1e-7)
