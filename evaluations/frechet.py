"""Fréchet distance between two Gaussians and the streaming statistics that feed it.

    d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr sqrt(S1 S2)

pytorch-fid forms sqrt(S1 S2) with `scipy.linalg.sqrtm`, a Schur-based square root of a
non-symmetric matrix: slow at d = 2048 and, with few samples (singular S1 S2), prone to
infinities and imaginary parts. Only the trace of the square root is needed, and S1 S2 is
similar to the symmetric positive semi-definite matrix A^T S2 A for any A with A A^T = S1
(the eigenvalues of X Y and Y X coincide). So Tr sqrt(S1 S2) is the sum of the square roots
of the eigenvalues of A^T S2 A, which `eigvalsh` gets quickly and in real arithmetic.
A is the Cholesky factor of S1 when S1 is positive definite; otherwise (a singular covariance,
e.g. fewer samples than dimensions) its symmetric square root from `eigh`, clipped at zero.
This module needs numpy and scipy only, so it can be used without torch.
"""

import numpy as np
from scipy.linalg.blas import dtrmm


def _as_stats(mu, sigma, which):
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{which}: mu has shape {mu.shape} and sigma {sigma.shape}; expected (d,) and (d, d)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{which}: mu or sigma contains NaN or infinity")
    return mu, sigma


def _congruence(sigma1, sigma2):
    """A^T sigma2 A for some A with A A^T = sigma1.

    Cholesky when sigma1 is positive definite (then A is triangular and the two products are
    triangular multiplies, half the work of general ones); otherwise the symmetric square root.
    """
    try:
        a = np.linalg.cholesky(sigma1)
    except np.linalg.LinAlgError:
        # Rank-deficient covariance (n <= d samples, constant features): the eigen-decomposition
        # always exists for a symmetric matrix; tiny negative eigenvalues are rounding noise.
        w, v = np.linalg.eigh(sigma1)
        a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
        return a.T @ sigma2 @ a
    a = np.asfortranarray(a)
    right = dtrmm(1.0, a, np.asfortranarray(sigma2), side=1, lower=1)  # sigma2 @ L
    return dtrmm(1.0, a, right, side=0, lower=1, trans_a=1, overwrite_b=1)  # L^T @ (sigma2 @ L)


def trace_sqrt_product(sigma1, sigma2):
    """Tr sqrt(sigma1 @ sigma2) for symmetric positive semi-definite sigma1, sigma2."""
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    m = _congruence(sigma1, sigma2)
    eigenvalues = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """The Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid defines it.

    Raises ValueError (one line) on mismatched shapes or non-finite input.
    """
    mu1, sigma1 = _as_stats(mu1, sigma1, "first statistics")
    mu2, sigma2 = _as_stats(mu2, sigma2, "second statistics")
    if mu1.shape != mu2.shape:
        raise ValueError(f"statistics have different dimensions: {mu1.shape[0]} and {mu2.shape[0]}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def frechet_distance_of_samples(features, mu2, sigma2):
    """frechet_distance(mean and covariance of the rows of `features`, mu2, sigma2), computed from
    the rows themselves. The samples' covariance is S1 = A A^T with A = centred rows^T / sqrt(n - 1),
    a d x n factor, so Tr sqrt(S1 S2) is the root-sum of the eigenvalues of the n x n matrix
    A^T S2 A: with fewer samples than dimensions (500 Inception features of 2048) this costs a
    small eigenproblem instead of a d x d one, which is what makes a bootstrap of FID affordable."""
    f = np.atleast_2d(np.asarray(features, dtype=np.float64))
    mu2, sigma2 = _as_stats(mu2, sigma2, "second statistics")
    n, d = f.shape
    if d != mu2.shape[0]:
        raise ValueError(f"statistics have different dimensions: {d} and {mu2.shape[0]}")
    if n < 2 or n > d or not np.isfinite(f).all():
        return frechet_distance(f.mean(0), np.atleast_2d(np.cov(f, rowvar=False)), mu2, sigma2)
    mu1 = f.mean(0)
    a = (f - mu1).T / np.sqrt(n - 1)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    m = a.T @ sigma2 @ a
    eigenvalues = np.linalg.eigvalsh(0.5 * (m + m.T))
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() + np.trace(sigma2)
                 - 2.0 * np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


class RunningStats:
    """Mean and covariance of feature rows seen in batches: float64 sum and X^T X.

    Memory is O(d^2) whatever the number of samples. `reduce(fn)` sums the accumulators
    over ranks with a sum-all-reduce, so the result does not depend on how rows were split.
    """

    def __init__(self, dims: int):
        self.dims = int(dims)
        self.count = 0
        self.total = np.zeros(self.dims, dtype=np.float64)
        self.gram = np.zeros((self.dims, self.dims), dtype=np.float64)

    def update(self, features):
        x = np.asarray(features, dtype=np.float64).reshape(-1, self.dims)
        self.count += x.shape[0]
        self.total += x.sum(axis=0)
        self.gram += x.T @ x

    def reduce(self, all_reduce_sum):
        """Replace the accumulators by their sum over ranks; `all_reduce_sum` maps a float64
        numpy array to the elementwise sum of that array over all ranks."""
        packed = np.concatenate([[float(self.count)], self.total, self.gram.ravel()])
        packed = np.asarray(all_reduce_sum(packed), dtype=np.float64)
        self.count = int(round(packed[0]))
        self.total = packed[1 : 1 + self.dims].copy()
        self.gram = packed[1 + self.dims :].reshape(self.dims, self.dims).copy()

    def mean_cov(self):
        """(mu, sigma) with sigma the unbiased covariance, as numpy's `np.cov(rowvar=False)`."""
        if self.count < 2:
            raise ValueError(f"statistics need at least 2 samples, got {self.count}")
        mu = self.total / self.count
        sigma = (self.gram - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, 0.5 * (sigma + sigma.T)
