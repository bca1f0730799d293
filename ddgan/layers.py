"""Building blocks of the NCSN++ generator and the DDGAN discriminators.

Attribute names (GroupNorm_0, Conv_0, Dense_0, NIN_0, style, W, b, ...) are the ones of the
released checkpoints' state_dicts; they are the compatibility surface, so they stay as they are
even where PEP 8 would say otherwise.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import upfirdn

# ---------------------------------------------------------------------------------------------
# initialisers
# ---------------------------------------------------------------------------------------------


def _tiny(scale):
    # an init scale of 0 means "almost zero" in the reference (exact zero would kill gradients
    # of the layers before it in a product with AdaGN's gamma)
    return 1e-10 if scale == 0 else scale


def default_init_(tensor, scale=1.0):
    """DDPM's variance scaling: uniform, fan_avg, dims 1 and 0 as in and out."""
    shape = tensor.shape
    receptive = math.prod(shape[2:]) if tensor.ndim > 2 else 1
    fan_avg = (shape[0] + shape[1]) * receptive / 2
    bound = math.sqrt(3 * _tiny(scale) / fan_avg)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def kaiming_fan_out_(tensor, scale=1.0):
    """The reference's dense/conv2d helpers ask for 'fan_avg' from a He-uniform routine that
    then uses the output fan; this reproduces the scale they actually get."""
    receptive = math.prod(tensor.shape[2:]) if tensor.ndim > 2 else 1
    fan_out = tensor.shape[0] * receptive
    bound = math.sqrt(3 * _tiny(scale) / max(1.0, fan_out))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def dense(in_features, out_features, init_scale=1.0):
    """Linear layer of the z mapping network, AdaGN and the discriminators."""
    lin = nn.Linear(in_features, out_features)
    kaiming_fan_out_(lin.weight, init_scale)
    nn.init.zeros_(lin.bias)
    return lin


def conv2d(in_ch, out_ch, kernel_size, padding=0, bias=True, init_scale=1.0):
    """Convolution of the discriminators."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=bias)
    kaiming_fan_out_(conv.weight, init_scale)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def ddpm_linear(in_features, out_features):
    lin = nn.Linear(in_features, out_features)
    default_init_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def conv3x3(in_ch, out_ch, stride=1, bias=True, init_scale=1.0, padding=1):
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding, bias=bias)
    default_init_(conv.weight, init_scale)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch, out_ch, bias=True, init_scale=1.0):
    conv = nn.Conv2d(in_ch, out_ch, 1, bias=bias)
    default_init_(conv.weight, init_scale)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


# ---------------------------------------------------------------------------------------------
# embeddings and small layers
# ---------------------------------------------------------------------------------------------


def timestep_embedding(timesteps, dim, max_positions=10000):
    """Transformer sinusoidal embedding of the (integer) step index: [sin, cos] halves."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device)
                      * -(math.log(max_positions) / (half - 1)))
    args = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of log sigma; W is a frozen parameter (it is in state_dict)."""

    def __init__(self, embedding_size=256, scale=1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x):
        proj = x[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class NIN(nn.Module):
    """Per-pixel linear map with weight W of shape (in, out): a 1x1 conv stored transposed."""

    def __init__(self, in_dim, num_units, init_scale=0.1):
        super().__init__()
        self.W = nn.Parameter(default_init_(torch.empty(in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x):
        return F.conv2d(x, self.W.t()[:, :, None, None], self.b)


class PixelNorm(nn.Module):
    def forward(self, z):
        return z / torch.sqrt(torch.mean(z ** 2, dim=1, keepdim=True) + 1e-8)


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine parameters; scale and shift come from the z embedding
    (StyleGAN-style AdaIN on groups). The bias starts at gamma = 1, beta = 0."""

    def __init__(self, num_groups, channels, style_dim):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels, affine=False, eps=1e-6)
        self.style = dense(style_dim, channels * 2)
        with torch.no_grad():
            self.style.bias[:channels] = 1
            self.style.bias[channels:] = 0

    def forward(self, x, style):
        gamma, beta = self.style(style)[:, :, None, None].chunk(2, 1)
        return gamma * self.norm(x) + beta


def _groups(channels):
    return min(channels // 4, 32)


class AttnBlockpp(nn.Module):
    """Single-head self-attention over all pixels."""

    def __init__(self, channels, skip_rescale=False, init_scale=0.0):
        super().__init__()
        self.GroupNorm_0 = nn.GroupNorm(_groups(channels), channels, eps=1e-6)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q = self.NIN_0(h).reshape(b, c, hh * ww)
        k = self.NIN_1(h).reshape(b, c, hh * ww)
        v = self.NIN_2(h).reshape(b, c, hh * ww)
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * c ** -0.5, dim=-1)  # (b, q, k)
        h = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww)
        h = self.NIN_3(h)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Combine(nn.Module):
    """Merge the input pyramid into the main path ('cat' or 'sum')."""

    def __init__(self, dim1, dim2, method="cat"):
        super().__init__()
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x, y):
        h = self.Conv_0(x)
        if self.method == "cat":
            return torch.cat([h, y], dim=1)
        return h + y


class Upsample(nn.Module):
    def __init__(self, in_ch=None, out_ch=None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and not fir:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        elif with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, 3, up=True, resample_kernel=fir_kernel)
        self.fir, self.with_conv, self.fir_kernel = fir, with_conv, fir_kernel

    def forward(self, x):
        if not self.fir:
            h = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.Conv_0(h) if self.with_conv else h
        if self.with_conv:
            return self.Conv2d_0(x)
        return upfirdn.upsample_2d(x, self.fir_kernel, factor=2)


class Downsample(nn.Module):
    def __init__(self, in_ch=None, out_ch=None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and not fir:
            self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        elif with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, 3, down=True, resample_kernel=fir_kernel)
        self.fir, self.with_conv, self.fir_kernel = fir, with_conv, fir_kernel

    def forward(self, x):
        if not self.fir:
            if self.with_conv:
                # TF 'SAME' padding for a stride-2 3x3 conv pads only at the end
                return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
            return F.avg_pool2d(x, 2, stride=2)
        if self.with_conv:
            return self.Conv2d_0(x)
        return upfirdn.downsample_2d(x, self.fir_kernel, factor=2)


class FIRConv2d(nn.Module):
    """3x3 conv fused with FIR up- or down-sampling (StyleGAN2); keys `weight`, `bias`."""

    def __init__(self, in_ch, out_ch, kernel, up=False, down=False, resample_kernel=(1, 3, 3, 1),
                 use_bias=True):
        super().__init__()
        if up and down:
            raise ValueError("FIRConv2d: up and down are exclusive")
        self.weight = nn.Parameter(default_init_(torch.empty(out_ch, in_ch, kernel, kernel)))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if use_bias else None
        self.up, self.down, self.kernel = up, down, kernel
        self.resample_kernel = tuple(resample_kernel)

    def forward(self, x):
        if self.up:
            x = upfirdn.upsample_conv_2d(x, self.weight, self.resample_kernel)
        elif self.down:
            x = upfirdn.conv_downsample_2d(x, self.weight, self.resample_kernel)
        else:
            x = F.conv2d(x, self.weight, padding=self.kernel // 2)
        return x if self.bias is None else x + self.bias[None, :, None, None]


# ---------------------------------------------------------------------------------------------
# residual blocks conditioned on the time embedding (bias) and z (AdaGN)
# ---------------------------------------------------------------------------------------------


class ResnetBlockDDPMAdaGN(nn.Module):
    """DDPM residual block (resblock_type 'ddpm'); shortcut NIN_0 (or Conv_2) on width change."""

    def __init__(self, act, in_ch, out_ch=None, temb_dim=None, zemb_dim=None, conv_shortcut=False,
                 dropout=0.1, skip_rescale=False, init_scale=0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = AdaptiveGroupNorm(_groups(in_ch), in_ch, zemb_dim)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = ddpm_linear(temb_dim, out_ch)
        self.GroupNorm_1 = AdaptiveGroupNorm(_groups(out_ch), out_ch, zemb_dim)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.out_ch, self.skip_rescale = act, out_ch, skip_rescale
        self.conv_shortcut = conv_shortcut

    def forward(self, x, temb=None, zemb=None):
        h = self.Conv_0(self.act(self.GroupNorm_0(x, zemb)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h, zemb))))
        if x.shape[1] != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGANAdaGN(nn.Module):
    """BigGAN residual block with optional FIR up/down-sampling inside (resblock_type 'biggan';
    with one_adagn=True the second norm is a plain affine GroupNorm: 'biggan_oneadagn')."""

    def __init__(self, act, in_ch, out_ch=None, temb_dim=None, zemb_dim=None, up=False, down=False,
                 dropout=0.1, fir=False, fir_kernel=(1, 3, 3, 1), skip_rescale=True, init_scale=0.0,
                 one_adagn=False):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = AdaptiveGroupNorm(_groups(in_ch), in_ch, zemb_dim)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = ddpm_linear(temb_dim, out_ch)
        if one_adagn:
            self.GroupNorm_1 = nn.GroupNorm(_groups(out_ch), out_ch, eps=1e-6)
        else:
            self.GroupNorm_1 = AdaptiveGroupNorm(_groups(out_ch), out_ch, zemb_dim)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.up, self.down, self.fir = act, up, down, fir
        self.fir_kernel, self.one_adagn = tuple(fir_kernel), one_adagn
        self.in_ch, self.out_ch, self.skip_rescale = in_ch, out_ch, skip_rescale

    def _resample(self, x):
        if self.up:
            return (upfirdn.upsample_2d(x, self.fir_kernel) if self.fir
                    else upfirdn.naive_upsample_2d(x))
        if self.down:
            return (upfirdn.downsample_2d(x, self.fir_kernel) if self.fir
                    else upfirdn.naive_downsample_2d(x))
        return x

    def forward(self, x, temb=None, zemb=None):
        h = self.act(self.GroupNorm_0(x, zemb))
        h, x = self._resample(h), self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.GroupNorm_1(h) if self.one_adagn else self.GroupNorm_1(h, zemb)
        h = self.Conv_1(self.Dropout_0(self.act(h)))
        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h
