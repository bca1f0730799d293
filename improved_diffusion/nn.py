"""Small building blocks of the UNet, with openai/improved-diffusion's names."""

import math

import torch
import torch.nn as nn
import torch.utils.checkpoint


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype.

    Half-precision statistics over large groups lose too much accuracy; the result is cast
    back so the rest of the block stays in the activation dtype.
    """

    def forward(self, x):
        if x.dtype == torch.float32:
            return super().forward(x)
        return super().forward(x.float()).type(x.dtype)


def normalization(channels):
    """The UNet's normalisation layer: 32 groups (the released checkpoints assume it)."""
    return GroupNorm32(32, channels)


def conv_nd(dims, *args, **kwargs):
    """A 1-D, 2-D or 3-D convolution."""
    try:
        return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims](*args, **kwargs)
    except KeyError:
        raise ValueError(f"unsupported dimensions: {dims}") from None


def avg_pool_nd(dims, *args, **kwargs):
    """A 1-D, 2-D or 3-D average pooling."""
    try:
        return {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims](*args, **kwargs)
    except KeyError:
        raise ValueError(f"unsupported dimensions: {dims}") from None


def linear(*args, **kwargs):
    return nn.Linear(*args, **kwargs)


def zero_module(module):
    """Zero a module's parameters so a residual branch starts as the identity."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def scale_module(module, scale):
    for p in module.parameters():
        p.detach().mul_(scale)
    return module


@torch.no_grad()
def update_ema(target_params, source_params, rate=0.99):
    """target <- rate * target + (1 - rate) * source, parameter by parameter."""
    for targ, src in zip(target_params, source_params):
        targ.mul_(rate).add_(src, alpha=1 - rate)


def mean_flat(tensor):
    """Mean over every dimension but the batch one."""
    return tensor.mean(dim=list(range(1, tensor.ndim)))


def timestep_embedding(timesteps, dim, max_period=10000):
    """Sinusoidal embedding [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i/half).

    `timesteps` may be fractional (rescaled timesteps are). An odd `dim` gets a zero column.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def checkpoint(func, inputs, params, flag):
    """Run func(*inputs), recomputing its activations in backward when `flag` is set.

    `params` is accepted for openai's signature; torch's non-reentrant checkpoint finds the
    parameters itself and also works with DDP and autocast.
    """
    del params
    if flag and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(func, *inputs, use_reentrant=False)
    return func(*inputs)
