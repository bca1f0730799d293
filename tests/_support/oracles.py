"""The diffusion samplers' oracle: a Gaussian mixture's exact denoiser, in closed form, standing
in for a network (tests/unit/test_id_samplers.py explains the maths)."""

import math

import torch

from improved_diffusion import samplers
from improved_diffusion.script_util import create_gaussian_diffusion

SHAPE = (2, 2, 1)  # C, H, W: 4 dimensions
GAUSS = {"means": [[0.5] * 4], "stds": [0.5], "weights": [1.0]}
MIXTURE = {"means": [[0.6] * 4, [-0.5] * 4], "stds": [0.3, 0.2], "weights": [0.6, 0.4]}
OVERLAPPING = {"means": [[0.4] * 4, [-0.3] * 4], "stds": [0.4, 0.3], "weights": [0.6, 0.4]}


def make_diffusion(T=1000, schedule="cosine", **kwargs):
    return create_gaussian_diffusion(steps=T, noise_schedule=schedule, rescale_timesteps=True, **kwargs)


class MixtureOracle:
    """model(x, t, y=None) of the Gaussian mixture: E[eps | x_t] (or E[x0 | x_t] with
    predict="xstart", E[v | x_t] = alpha E[eps | x_t] - sigma E[x0 | x_t] with predict="v"), plus
    C variance channels with learn_sigma. t is read the way the samplers feed it (scaled
    timesteps, lambda interpolated between them); y picks a component."""

    def __init__(self, diffusion, means, stds, weights, predict="eps", learn_sigma=False):
        self.levels = samplers.NoiseLevels(diffusion)
        self.means = torch.tensor(means, dtype=torch.float64)
        self.stds = torch.tensor(stds, dtype=torch.float64)
        self.log_weights = torch.tensor(weights, dtype=torch.float64).log()
        self.predict, self.learn_sigma = predict, learn_sigma
        self.calls = 0

    def __call__(self, x, t, y=None):
        self.calls += 1
        flat = x.reshape(x.shape[0], -1).double()
        lam = torch.from_numpy(self.levels.lam(t.double().numpy() / self.levels.input_scale))[:, None]
        alpha, sigma = torch.sigmoid(2 * lam).sqrt(), torch.sigmoid(-2 * lam).sqrt()  # (B, 1)
        var = alpha**2 * self.stds**2 + sigma**2  # (B, K)
        diff = flat[:, None, :] - alpha[..., None] * self.means  # (B, K, D)
        log_p = self.log_weights - 0.5 * ((diff**2).sum(-1) / var + flat.shape[1] * var.log())
        if y is not None:
            log_p = log_p.masked_fill(torch.arange(len(self.stds)) != y[:, None], -math.inf)
        post = torch.softmax(log_p, dim=1)[..., None]
        eps = (post * sigma[..., None] * diff / var[..., None]).sum(1)
        x0 = (post * (self.means + (alpha * self.stds**2 / var)[..., None] * diff)).sum(1)
        out = {"eps": eps, "xstart": x0, "v": alpha * eps - sigma * x0}[self.predict]
        out = out.reshape(x.shape).to(x.dtype)
        return torch.cat([out, torch.full_like(out, 0.3)], dim=1) if self.learn_sigma else out


def rms(a, b):
    return float((a - b).pow(2).mean().sqrt())

