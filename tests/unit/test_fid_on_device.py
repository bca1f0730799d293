"""FID statistics accumulated where the features are (evaluations.fid.DeviceStats): the same
mean and covariance as numpy's, from one batch or many, and as the host accumulator they replace
(frechet.RunningStats) within float64 summation order. On a machine with CUDA the same checks
run with the accumulators on the GPU."""

import numpy as np
import pytest
import torch

from evaluations import fid
from evaluations.frechet import RunningStats

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rows(n=257, d=6, seed=0):
    # a large mean against a small spread: a float32 accumulator loses the covariance to
    # cancellation in X^T X - n mu mu^T, a float64 one keeps it to ~1e-9
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * 0.5 + 40.0).astype(np.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_statistics_equal_numpys_mean_and_cov_from_one_batch_or_many(device):
    x = _rows()
    expected_mu, expected_sigma = x.astype(np.float64).mean(0), np.cov(x.astype(np.float64), rowvar=False)
    for chunks in (1, 2, 9, len(x)):
        stats = fid.DeviceStats(x.shape[1], device)
        for part in np.array_split(x, chunks):
            stats.update(torch.from_numpy(part).to(device))
        assert stats.gram.device.type == device and stats.count == len(x)
        mu, sigma = stats.mean_cov()
        assert mu.dtype == sigma.dtype == np.float64
        np.testing.assert_allclose(mu, expected_mu, rtol=1e-12)
        np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(sigma, sigma.T)


def test_device_statistics_equal_the_host_accumulators_they_replace():
    x = _rows(n=100, d=9, seed=3)
    host, device = RunningStats(9), fid.DeviceStats(9)
    for part in np.array_split(x, 7):
        host.update(part.astype(np.float64))
        device.update(torch.from_numpy(part))
    for a, b in zip(host.mean_cov(), device.mean_cov()):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        one = fid.DeviceStats(3)
        one.update(torch.zeros(1, 3))
        one.mean_cov()


class _PixelFeatures(torch.nn.Module):
    """A stand-in for Inception: each image's first `dims` pixel values as its (dims, 1, 1)
    features, so the features of an image do not depend on its batch."""

    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return [x.flatten(1)[:, : self.dims, None, None] * 3.0 + 7.0]


@pytest.mark.parametrize("device", DEVICES)
def test_statistics_of_dataset_do_not_depend_on_the_batch_size(device):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(23, 4, 4, 3), dtype=np.uint8)
    dims = 10
    model = _PixelFeatures(dims)
    # the features as the model forms them (float32, from torchvision's ToTensor scaling)
    pixels = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)[0].flatten(1).double().numpy()
    results = [fid.statistics_of_dataset(fid._ArrayImages(images), model, dims, batch_size=b, device=device,
                                         num_workers=0) for b in (23, 5, 1)]
    for mu, sigma in results:
        np.testing.assert_allclose(mu, pixels.mean(0), rtol=1e-12)
        np.testing.assert_allclose(sigma, np.cov(pixels, rowvar=False), rtol=1e-9, atol=1e-12)
