"""Likelihood terms of the diffusion bound: Gaussian KL and the discretised decoder.

Names and formulas follow Ho et al. (2020) and openai/improved-diffusion so that bits/dim
figures are comparable with the papers.
"""

import math

import torch


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats.

    Any argument may be a Python float; at least one must be a tensor (it sets dtype/device).
    """
    ref = next((v for v in (mean1, logvar1, mean2, logvar2) if isinstance(v, torch.Tensor)), None)
    if ref is None:
        raise TypeError("normal_kl needs at least one tensor argument")
    # exp() does not broadcast Python floats, so turn the log-variances into tensors first.
    logvar1 = logvar1 if isinstance(logvar1, torch.Tensor) else torch.tensor(logvar1).to(ref)
    logvar2 = logvar2 if isinstance(logvar2, torch.Tensor) else torch.tensor(logvar2).to(ref)
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x):
    """The tanh approximation of Phi(x) that the released models were evaluated with."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
    """log P(x) of a Gaussian integrated over the uint8 bin around each value of x, in nats.

    x holds uint8 values mapped to [-1, 1] (bin width 2/255). The outermost bins extend to
    -inf / +inf so that the 256 bins cover the real line and their probabilities sum to 1.
    """
    if not (x.shape == means.shape == log_scales.shape):
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, means {tuple(means.shape)}, "
                         f"log_scales {tuple(log_scales.shape)}")
    centred = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_minus = approx_standard_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    # Clamps keep log() finite when a bin has (numerically) zero mass.
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_bin = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_bin))
