"""NCSN++ generator of DDGAN: a U-Net over x_{t+1} conditioned on the step index t (sinusoidal
or Fourier embedding -> two dense layers) and on a latent z (PixelNorm + MLP -> AdaGN in every
residual block). It predicts x_0.

The state_dict layout is the released checkpoints': every block lives in one flat ModuleList
`all_modules` in execution order, the mapping network is `z_transform` (a Sequential with
PixelNorm at index 0 and activations between the dense layers).
"""

import functools
import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from . import layers


@dataclass
class GeneratorConfig:
    """The generator options of train_ddgan.py, with its defaults (ch_mult has none there)."""
    image_size: int = 32
    num_channels: int = 3
    centered: bool = True
    num_channels_dae: int = 128
    n_mlp: int = 3
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (16,)
    dropout: float = 0.0
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    embedding_type: str = "positional"
    fourier_scale: float = 16.0
    not_use_tanh: bool = False
    nz: int = 100
    z_emb_dim: int = 256

    @classmethod
    def from_options(cls, options):
        """Pick the generator's fields out of a flag namespace or dict."""
        get = options.get if isinstance(options, dict) else lambda k, d=None: getattr(options, k, d)
        kw = {}
        for f in fields(cls):
            v = get(f.name, None)
            if v is not None:
                kw[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)


class NCSNpp(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        c = config
        self.config = c
        self.act = act = nn.SiLU()
        self.nf = nf = c.num_channels_dae
        self.num_resolutions = len(c.ch_mult)
        self.num_res_blocks = c.num_res_blocks
        self.all_resolutions = [c.image_size // 2 ** i for i in range(self.num_resolutions)]
        self.conditional = c.conditional
        self.skip_rescale = c.skip_rescale
        self.resblock_type = c.resblock_type.lower()
        self.progressive = c.progressive.lower()
        self.progressive_input = c.progressive_input.lower()
        self.embedding_type = c.embedding_type.lower()
        combine_method = c.progressive_combine.lower()
        for name, value, choices in [
                ("progressive", self.progressive, ("none", "output_skip", "residual")),
                ("progressive_input", self.progressive_input, ("none", "input_skip", "residual")),
                ("progressive_combine", combine_method, ("sum", "cat")),
                ("embedding_type", self.embedding_type, ("fourier", "positional")),
                ("resblock_type", self.resblock_type, ("ddpm", "biggan", "biggan_oneadagn"))]:
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        attn = set(int(r) for r in c.attn_resolutions)
        fir, fir_kernel = c.fir, tuple(c.fir_kernel)
        init_scale = 0.0  # output convs of the residual branches start (almost) at zero
        temb_dim = nf * 4

        modules = []
        if self.embedding_type == "fourier":
            modules.append(layers.GaussianFourierProjection(nf, c.fourier_scale))
            embed_dim = 2 * nf
        else:
            embed_dim = nf
        if c.conditional:
            modules.append(layers.ddpm_linear(embed_dim, temb_dim))
            modules.append(layers.ddpm_linear(temb_dim, temb_dim))

        if self.resblock_type == "ddpm":
            ResBlock = functools.partial(
                layers.ResnetBlockDDPMAdaGN, act=act, dropout=c.dropout, init_scale=init_scale,
                skip_rescale=c.skip_rescale, temb_dim=temb_dim, zemb_dim=c.z_emb_dim)
        else:
            ResBlock = functools.partial(
                layers.ResnetBlockBigGANAdaGN, act=act, dropout=c.dropout, fir=fir,
                fir_kernel=fir_kernel, init_scale=init_scale, skip_rescale=c.skip_rescale,
                temb_dim=temb_dim, zemb_dim=c.z_emb_dim,
                one_adagn=self.resblock_type == "biggan_oneadagn")
        Attn = functools.partial(layers.AttnBlockpp, init_scale=init_scale,
                                 skip_rescale=c.skip_rescale)
        Up = functools.partial(layers.Upsample, with_conv=c.resamp_with_conv, fir=fir,
                               fir_kernel=fir_kernel)
        Down = functools.partial(layers.Downsample, with_conv=c.resamp_with_conv, fir=fir,
                                 fir_kernel=fir_kernel)
        if self.progressive == "output_skip":
            self.pyramid_upsample = layers.Upsample(fir=fir, fir_kernel=fir_kernel, with_conv=False)
        if self.progressive_input == "input_skip":
            self.pyramid_downsample = layers.Downsample(fir=fir, fir_kernel=fir_kernel,
                                                        with_conv=False)

        # Which levels carry attention is fixed here from the configured image size (the
        # reference re-decides from the live feature size, which only differs when it breaks).
        self.attn_levels = [r in attn for r in self.all_resolutions]

        channels = c.num_channels
        input_pyramid_ch = channels
        modules.append(layers.conv3x3(channels, nf))
        hs_c = [nf]
        in_ch = nf
        for level in range(self.num_resolutions):
            for _ in range(c.num_res_blocks):
                out_ch = nf * c.ch_mult[level]
                modules.append(ResBlock(in_ch=in_ch, out_ch=out_ch))
                in_ch = out_ch
                if self.attn_levels[level]:
                    modules.append(Attn(channels=in_ch))
                hs_c.append(in_ch)
            if level != self.num_resolutions - 1:
                if self.resblock_type == "ddpm":
                    modules.append(Down(in_ch=in_ch))
                else:
                    modules.append(ResBlock(down=True, in_ch=in_ch))
                if self.progressive_input == "input_skip":
                    modules.append(layers.Combine(input_pyramid_ch, in_ch, method=combine_method))
                    if combine_method == "cat":
                        in_ch *= 2
                elif self.progressive_input == "residual":
                    modules.append(layers.Downsample(in_ch=input_pyramid_ch, out_ch=in_ch,
                                                     with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    input_pyramid_ch = in_ch
                hs_c.append(in_ch)

        in_ch = hs_c[-1]
        modules.append(ResBlock(in_ch=in_ch))
        modules.append(Attn(channels=in_ch))
        modules.append(ResBlock(in_ch=in_ch))

        pyramid_ch = 0
        for level in reversed(range(self.num_resolutions)):
            for _ in range(c.num_res_blocks + 1):
                out_ch = nf * c.ch_mult[level]
                modules.append(ResBlock(in_ch=in_ch + hs_c.pop(), out_ch=out_ch))
                in_ch = out_ch
            if self.attn_levels[level]:
                modules.append(Attn(channels=in_ch))
            if self.progressive != "none":
                gn = nn.GroupNorm(layers._groups(in_ch), in_ch, eps=1e-6)
                if level == self.num_resolutions - 1:
                    if self.progressive == "output_skip":
                        modules += [gn, layers.conv3x3(in_ch, channels, init_scale=init_scale)]
                        pyramid_ch = channels
                    else:
                        modules += [gn, layers.conv3x3(in_ch, in_ch)]
                        pyramid_ch = in_ch
                else:
                    if self.progressive == "output_skip":
                        modules += [gn, layers.conv3x3(in_ch, channels, init_scale=init_scale)]
                        pyramid_ch = channels
                    else:
                        modules.append(layers.Upsample(in_ch=pyramid_ch, out_ch=in_ch, with_conv=True,
                                                       fir=fir, fir_kernel=fir_kernel))
                        pyramid_ch = in_ch
            if level != 0:
                if self.resblock_type == "ddpm":
                    modules.append(Up(in_ch=in_ch))
                else:
                    modules.append(ResBlock(in_ch=in_ch, up=True))
        assert not hs_c

        if self.progressive != "output_skip":
            modules.append(nn.GroupNorm(layers._groups(in_ch), in_ch, eps=1e-6))
            modules.append(layers.conv3x3(in_ch, channels, init_scale=init_scale))
        self.all_modules = nn.ModuleList(modules)

        mapping = [layers.PixelNorm(), layers.dense(c.nz, c.z_emb_dim), self.act]
        for _ in range(c.n_mlp):
            mapping += [layers.dense(c.z_emb_dim, c.z_emb_dim), self.act]
        self.z_transform = nn.Sequential(*mapping)

    def forward(self, x, time_cond, z):
        zemb = self.z_transform(z)
        mods = iter(self.all_modules)
        if self.embedding_type == "fourier":
            temb = next(mods)(torch.log(time_cond))
        else:
            temb = layers.timestep_embedding(time_cond, self.nf)
        if self.conditional:
            temb = next(mods)(temb)
            temb = next(mods)(self.act(temb))
        else:
            temb = None
        if not self.config.centered:
            x = 2 * x - 1.0  # data in [0, 1]

        input_pyramid = x if self.progressive_input != "none" else None
        hs = [next(mods)(x)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb, zemb)
                if self.attn_levels[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                if self.resblock_type == "ddpm":
                    h = next(mods)(hs[-1])
                else:
                    h = next(mods)(hs[-1], temb, zemb)
                if self.progressive_input == "input_skip":
                    input_pyramid = self.pyramid_downsample(input_pyramid)
                    h = next(mods)(input_pyramid, h)
                elif self.progressive_input == "residual":
                    input_pyramid = next(mods)(input_pyramid)
                    input_pyramid = self._merge(input_pyramid, h)
                    h = input_pyramid
                hs.append(h)

        h = hs[-1]
        h = next(mods)(h, temb, zemb)
        h = next(mods)(h)
        h = next(mods)(h, temb, zemb)

        pyramid = None
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb, zemb)
            if self.attn_levels[level]:
                h = next(mods)(h)
            if self.progressive != "none":
                if level == self.num_resolutions - 1:
                    pyramid = self._norm_conv(mods, h)
                elif self.progressive == "output_skip":
                    pyramid = self.pyramid_upsample(pyramid) + self._norm_conv(mods, h)
                else:
                    pyramid = self._merge(next(mods)(pyramid), h)
                    h = pyramid
            if level != 0:
                if self.resblock_type == "ddpm":
                    h = next(mods)(h)
                else:
                    h = next(mods)(h, temb, zemb)

        if self.progressive == "output_skip":
            h = pyramid
        else:
            h = self._norm_conv(mods, h)
        return h if self.config.not_use_tanh else torch.tanh(h)

    def _norm_conv(self, mods, h):
        norm = next(mods)  # modules come in execution order: GroupNorm, then conv
        conv = next(mods)
        return conv(self.act(norm(h)))

    def _merge(self, a, b):
        return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b
