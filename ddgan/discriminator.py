"""Time-conditioned discriminators D(x_t, t, x_{t+1}) of DDGAN.

The pair (x_t, x_{t+1}) is concatenated on channels (nc = 2 * image channels). `small` has four
residual down blocks (32 px: 32 -> 4), `large` six (64 px and up). Both end with StyleGAN's
minibatch standard deviation, a 3x3 conv, a spatial sum and one linear unit (a logit).
"""

import math

import torch
import torch.nn as nn

from . import layers, upfirdn


class TimestepEmbedding(nn.Module):
    def __init__(self, embedding_dim, hidden_dim, output_dim, act):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.main = nn.Sequential(layers.dense(embedding_dim, hidden_dim), act,
                                  layers.dense(hidden_dim, output_dim))

    def forward(self, t):
        return self.main(layers.timestep_embedding(t, self.embedding_dim))


class DownConvBlock(nn.Module):
    """act -> conv -> +dense(t) -> act -> [FIR down] -> conv (near-zero init), plus a 1x1 skip,
    summed and divided by sqrt 2."""

    def __init__(self, in_ch, out_ch, t_emb_dim, downsample=False, act=None,
                 fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv1 = nn.Sequential(layers.conv2d(in_ch, out_ch, 3, padding=1))
        self.conv2 = nn.Sequential(layers.conv2d(out_ch, out_ch, 3, padding=1, init_scale=0.0))
        self.dense_t1 = layers.dense(t_emb_dim, out_ch)
        self.skip = nn.Sequential(layers.conv2d(in_ch, out_ch, 1, bias=False))
        self.act = act if act is not None else nn.LeakyReLU(0.2)
        self.downsample, self.fir_kernel = downsample, tuple(fir_kernel)

    def forward(self, x, t_emb):
        out = self.conv1(self.act(x)) + self.dense_t1(t_emb)[..., None, None]
        out = self.act(out)
        if self.downsample:
            out = upfirdn.downsample_2d(out, self.fir_kernel)
            x = upfirdn.downsample_2d(x, self.fir_kernel)
        out = self.conv2(out)
        return (out + self.skip(x)) / math.sqrt(2)


def minibatch_stddev(x, group_size=4, num_features=1):
    """Append the average (over features and pixels) standard deviation within groups of
    min(batch, group_size) samples as one extra channel.

    Sample i is grouped with i + k * (batch / group), the reference's view(group, -1, ...)
    order; the batch must be a multiple of the group size (the reference crashes otherwise).

    The statistics are computed in fp32 whatever the input's dtype (StyleGAN2-ADA runs its whole
    discriminator epilogue, minibatch-std included, in fp32): in fp16 the 1e-8 below rounds to 0
    (fp16's smallest subnormal is 6e-8), and the lazy R1's double backward goes through sqrt's
    second derivative -1/(4 v^1.5), which overflows fp16 for a variance v under ~1e-3 once
    multiplied by the loss scale, and inf * 0 made D's gradients NaN on every R1 step. For fp32
    input the casts are no-ops: the fp32 update is bit for bit the reference's."""
    n, c, h, w = x.shape
    group = min(n, group_size)
    if n % group:
        raise ValueError(f"minibatch-std: batch {n} is not a multiple of the group size {group}")
    y = x.float().view(group, -1, num_features, c // num_features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
    y = y.mean([2, 3, 4], keepdim=True).squeeze(2)  # (n/group, features, 1, 1)
    y = y.repeat(group, 1, h, w).to(x.dtype)
    return torch.cat([x, y], 1)


class _Discriminator(nn.Module):
    stddev_group = 4
    stddev_feat = 1

    def __init__(self, nc, ngf, t_emb_dim, act, widths, downs, final_init_scale):
        super().__init__()
        act = act if act is not None else nn.LeakyReLU(0.2)
        self.act = act
        self.t_embed = TimestepEmbedding(t_emb_dim, t_emb_dim, t_emb_dim, act)
        self.start_conv = layers.conv2d(nc, ngf * 2, 1)
        in_ch = ngf * 2
        for i, (mult, down) in enumerate(zip(widths, downs), start=1):
            setattr(self, f"conv{i}", DownConvBlock(in_ch, ngf * mult, t_emb_dim, downsample=down,
                                                    act=act))
            in_ch = ngf * mult
        self.num_blocks = len(widths)
        self.final_conv = layers.conv2d(in_ch + 1, in_ch, 3, padding=1, init_scale=final_init_scale)
        self.end_linear = layers.dense(in_ch, 1)

    def forward(self, x, t, x_tp1):
        t_emb = self.act(self.t_embed(t))
        h = self.start_conv(torch.cat((x, x_tp1), dim=1))
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f"conv{i}")(h, t_emb)
        h = minibatch_stddev(h, self.stddev_group, self.stddev_feat)
        h = self.act(self.final_conv(h))
        return self.end_linear(h.flatten(2).sum(2))


class DiscriminatorSmall(_Discriminator):
    """For 32 px images (CIFAR-10, StackedMNIST) and the tiny test sizes."""

    def __init__(self, nc=6, ngf=64, t_emb_dim=256, act=None):
        super().__init__(nc, ngf, t_emb_dim, act, widths=(2, 4, 8, 8),
                         downs=(False, True, True, True), final_init_scale=0.0)


class DiscriminatorLarge(_Discriminator):
    """For 64 px and larger images (CelebA-HQ, LSUN)."""

    def __init__(self, nc=6, ngf=64, t_emb_dim=256, act=None):
        # the large network's final conv uses the ordinary init scale in the reference
        super().__init__(nc, ngf, t_emb_dim, act, widths=(4, 8, 8, 8, 8, 8),
                         downs=(True,) * 6, final_init_scale=1.0)


def build_discriminator(image_size, num_channels, ngf, t_emb_dim):
    """The reference picks by data set (cifar10/stackmnist small, else large); we pick by size."""
    cls = DiscriminatorSmall if image_size < 64 else DiscriminatorLarge
    return cls(nc=2 * num_channels, ngf=ngf, t_emb_dim=t_emb_dim, act=nn.LeakyReLU(0.2))
