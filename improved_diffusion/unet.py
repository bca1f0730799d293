"""The UNet of Nichol & Dhariwal (2021) with the module tree of openai/improved-diffusion.

Module and attribute names are part of the checkpoint format: `time_embed.{0,2}`,
`label_emb`, `input_blocks.i.j`, `middle_block.{0,1,2}`, `output_blocks.i.j`, `out.{0,2}`;
inside a ResBlock `in_layers.{0,2}`, `emb_layers.1`, `out_layers.{0,3}`, `skip_connection`;
inside an AttentionBlock `norm`, `qkv`, `proj_out`. Keep them (and the index positions of
the parameterised layers inside each Sequential) or released checkpoints stop loading.
"""

from abc import abstractmethod

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fp16_util import convert_module_to_f16, convert_module_to_f32
from .nn import avg_pool_nd, checkpoint, conv_nd, linear, normalization, timestep_embedding, zero_module


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""

    @abstractmethod
    def forward(self, x, emb):
        ...


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """Sequential that hands the embedding to the children that take one."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling, then optionally a 3x3 convolution (`conv`)."""

    def __init__(self, channels, use_conv, dims=2):
        super().__init__()
        self.channels = channels
        self.use_conv = use_conv
        self.dims = dims
        if use_conv:
            self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x):
        if self.dims == 3:  # 3-D signals are upsampled in the inner two dimensions only
            x = F.interpolate(x, (x.shape[2], x.shape[3] * 2, x.shape[4] * 2), mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """x2 downsampling by a strided 3x3 convolution or average pooling (`op`)."""

    def __init__(self, channels, use_conv, dims=2):
        super().__init__()
        self.channels = channels
        self.use_conv = use_conv
        self.dims = dims
        stride = 2 if dims != 3 else (1, 2, 2)
        if use_conv:
            self.op = conv_nd(dims, channels, channels, 3, stride=stride, padding=1)
        else:
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding.

    With `use_scale_shift_norm` the embedding gives a scale and shift applied after the
    second normalisation (h = norm(h) * (1 + scale) + shift); otherwise it is added.
    """

    def __init__(self, channels, emb_channels, dropout, out_channels=None, use_conv=False,
                 use_scale_shift_norm=False, dims=2, use_checkpoint=False):
        super().__init__()
        self.channels = channels
        self.emb_channels = emb_channels
        self.dropout = dropout
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.use_checkpoint = use_checkpoint
        self.use_scale_shift_norm = use_scale_shift_norm

        self.in_layers = nn.Sequential(
            normalization(channels),
            nn.SiLU(),
            conv_nd(dims, channels, self.out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x, emb):
        return checkpoint(self._forward, (x, emb), (), self.use_checkpoint)

    def _forward(self, x, emb):
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        emb_out = emb_out.reshape(*emb_out.shape, *([1] * (h.ndim - 2)))
        if self.use_scale_shift_norm:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = emb_out.chunk(2, dim=1)
            h = torch.addcmul(shift, norm(h), 1 + scale)
            h = rest(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions.

    `qkv` (a 1x1 Conv1d, C -> 3C) is split per head first and then into q, k, v, each of
    C / heads channels: the order the released checkpoints were trained with.
    """

    def __init__(self, channels, num_heads=1, use_checkpoint=False):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {num_heads}")
        self.channels = channels
        self.num_heads = num_heads
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x):
        return checkpoint(self._forward, (x,), (), self.use_checkpoint)

    def _forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        length = x.shape[-1]
        qkv = self.qkv(self.norm(x))
        # (b, heads, 3, ch, T): per head [q; k; v] stacked along channels. One copy into
        # (3, b, heads, T, ch) gives q, k, v a unit last stride, which lets SDPA take its fused
        # CPU kernel; on strided views it falls back to the unfused math path, 2x slower
        # forward+backward at 16x16 (benchmarks/train_throughput.py).
        qkv = qkv.reshape(b, self.num_heads, 3, c // self.num_heads, length).permute(2, 0, 1, 4, 3)
        if qkv.device.type == "cpu" and qkv.dtype == torch.bfloat16:
            # The CPU's fused kernel is slower in bf16 than in fp32 (forward+backward, AVX-512
            # bf16: 1.2x at 16x16, 4x at 8x8), so bf16 CPU runs attend in fp32.
            with torch.autocast("cpu", enabled=False):
                q, k, v = qkv.float().contiguous().unbind(0)
                h = F.scaled_dot_product_attention(q, k, v).to(torch.bfloat16)
        else:
            q, k, v = qkv.contiguous().unbind(0)
            # The softmax scale 1/sqrt(ch) equals openai's 1/ch^(1/4) applied to both q and k.
            h = F.scaled_dot_product_attention(q, k, v)  # (b, heads, T, ch)
        h = h.transpose(-1, -2).reshape(b, c, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class UNetModel(nn.Module):
    """The UNet with timestep embedding, attention and optional class conditioning.

    :param attention_resolutions: downsample rates (1, 2, 4, ...) at which attention is used.
    :param channel_mult: channel multiplier per resolution level.
    :param num_classes: an int makes the model class-conditional (`label_emb`).
    :param null_class: add one row to the label embedding, label `num_classes`, for the
        unconditional model of classifier-free guidance (guidance.py). False keeps openai's
        layout (num_classes rows), so released class-conditional checkpoints load strict=True.
    """

    def __init__(self, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 dropout=0, channel_mult=(1, 2, 4, 8), conv_resample=True, dims=2, num_classes=None,
                 use_checkpoint=False, num_heads=1, num_heads_upsample=-1, use_scale_shift_norm=False,
                 null_class=False):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.dropout = dropout
        self.channel_mult = channel_mult
        self.conv_resample = conv_resample
        self.num_classes = num_classes
        self.use_checkpoint = use_checkpoint
        self.num_heads = num_heads
        self.num_heads_upsample = num_heads_upsample

        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(linear(model_channels, emb_dim), nn.SiLU(), linear(emb_dim, emb_dim))
        if null_class and num_classes is None:
            raise ValueError("a null class needs a class-conditional model")
        self.null_class = num_classes if null_class else None  # the label of "no class"
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes + (1 if null_class else 0), emb_dim)

        def res_block(ch_in, ch_out):
            return ResBlock(ch_in, emb_dim, dropout, out_channels=ch_out, dims=dims,
                            use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm)

        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(conv_nd(dims, in_channels, model_channels, 3, padding=1))]
        )
        skip_chans = [model_channels]  # channels of every input block's output, for the skips
        ch, ds = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res_block(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads=num_heads, use_checkpoint=use_checkpoint))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, conv_resample, dims=dims)))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            res_block(ch, ch),
            AttentionBlock(ch, num_heads=num_heads, use_checkpoint=use_checkpoint),
            res_block(ch, ch),
        )

        self.output_blocks = nn.ModuleList([])
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_chans.pop(), model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads=num_heads_upsample, use_checkpoint=use_checkpoint))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch, conv_resample, dims=dims))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(conv_nd(dims, model_channels, out_channels, 3, padding=1)),
        )

    def convert_to_fp16(self):
        """openai's fp16 mode: the convolutions of the torso in float16 (the embeddings and the
        output layers stay float32). This project's trainer uses autocast instead."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            part.apply(convert_module_to_f16)

    def convert_to_fp32(self):
        """Undo convert_to_fp16."""
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            part.apply(convert_module_to_f32)

    @property
    def inner_dtype(self):
        """The dtype the torso computes in: float16 after convert_to_fp16, else float32."""
        return next(self.input_blocks.parameters()).dtype

    def forward(self, x, timesteps, y=None):
        """x: (N, C, ...) inputs; timesteps: (N,) possibly fractional; y: (N,) labels."""
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass y if and only if the model is class-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs = []
        torso_dtype = self.inner_dtype
        h = x.type(torso_dtype)  # a no-op unless convert_to_fp16 was called
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        if torso_dtype != x.dtype:  # after convert_to_fp16 the output layers are still fp32
            h = h.type(x.dtype)
        return self.out(h)


class SuperResModel(UNetModel):
    """A UNet that also sees a bilinearly upsampled low-resolution image (`low_res`)."""

    def __init__(self, in_channels, *args, **kwargs):
        super().__init__(in_channels * 2, *args, **kwargs)

    def forward(self, x, timesteps, low_res=None, **kwargs):
        upsampled = F.interpolate(low_res, x.shape[2:], mode="bilinear")
        return super().forward(torch.cat([x, upsampled], dim=1), timesteps, **kwargs)
