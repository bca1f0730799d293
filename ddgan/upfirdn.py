"""FIR up/down-sampling (StyleGAN2's upfirdn2d) in plain PyTorch.

upfirdn2d(x, k, up, down, pad) is, per channel: insert up-1 zeros after every sample, pad
(pad0, pad1) on both axes (negative pads crop), convolve with k (a true convolution, k
flipped), keep every down-th sample. The reference compiles a CUDA kernel for this; here
the whole thing is one depthwise conv_transpose2d (up > 1) or conv2d (down > 1), which is what
dominates FIR's cost, and it runs on any device with gradients of any order.
"""

import numpy as np
import torch
import torch.nn.functional as F


def setup_kernel(k):
    """A 1-D kernel becomes its outer product; normalised to sum 1 (float32 numpy)."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}")
    return k / k.sum()


# FIR kernels on the device, keyed by content, dtype and device: built from numpy in every call
# they were a synchronising host-to-device copy on CUDA per resampling layer (4 per DDGAN step at
# the tiny test network, one per FIR layer at CIFAR-10's). A handful of distinct kernels exist.
_KERNELS = {}


def _depthwise(k, channels, like, flip=False):
    """k (a 2-D numpy kernel, flipped on both axes if asked) as a depthwise weight for `like`."""
    k = np.asarray(k)
    key = (k.dtype.str, k.shape, k.tobytes(), flip, like.dtype, like.device)
    kt = _KERNELS.get(key)
    if kt is None:
        host = np.ascontiguousarray(np.flip(k, (0, 1)) if flip else k)
        kt = _KERNELS[key] = torch.from_numpy(host.copy()).to(dtype=like.dtype, device=like.device)
    return kt.reshape(1, 1, *kt.shape).expand(channels, 1, *kt.shape)


def upfirdn2d(x, k, up=1, down=1, pad=(0, 0)):
    """x: (N, C, H, W); k: 2-D kernel; pad = (before, after), the same on both axes."""
    n, c, h, w = x.shape
    kh = k.shape[0]
    p0, p1 = pad
    if up > 1:
        # conv_transpose2d(stride=up) with the unflipped kernel is "zero-insert then convolve";
        # its full output starts kh-1 samples before the unpadded grid, so shift by p0-(kh-1).
        y = F.conv_transpose2d(x, _depthwise(k, c, x), stride=up, groups=c)
        full = y.shape[-1]  # (h-1)*up + kh
        length = h * up + p0 + p1 - kh + 1
        left = p0 - (kh - 1)
        right = length - left - full
        y = F.pad(y, (left, right, left, right))
        if down > 1:
            y = y[:, :, ::down, ::down]
        return y
    x = F.pad(x, (p0, p1, p0, p1))
    # conv2d correlates; flip so that it convolves as upfirdn2d does
    return F.conv2d(x, _depthwise(k, c, x, flip=True), stride=down, groups=c)


def upsample_2d(x, k=(1, 3, 3, 1), factor=2, gain=1):
    """Upsample by `factor` with FIR kernel k (scaled so that a constant image keeps its value)."""
    kk = setup_kernel(k) * (gain * factor ** 2)
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x, k=(1, 3, 3, 1), factor=2, gain=1):
    kk = setup_kernel(k) * gain
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x, weight, k=(1, 3, 3, 1), factor=2, gain=1):
    """Transposed conv (stride factor) then the FIR filter: StyleGAN2's fused up-conv.
    weight: (out, in, kh, kw), the layout of the reference's `Conv2d_0.weight`."""
    kk = setup_kernel(k) * (gain * factor ** 2)
    conv_k = weight.shape[-1]
    p = (kk.shape[0] - factor) - (conv_k - 1)
    # the reference transposes (out,in) and flips the spatial taps so that the transposed
    # conv is the adjoint of a correlation with `weight`
    w = torch.flip(weight, [2, 3]).transpose(0, 1)
    x = F.conv_transpose2d(x, w, stride=factor)
    return upfirdn2d(x, kk, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x, weight, k=(1, 3, 3, 1), factor=2, gain=1):
    """The FIR filter then a strided conv: StyleGAN2's fused down-conv."""
    kk = setup_kernel(k) * gain
    conv_k = weight.shape[-1]
    p = (kk.shape[0] - factor) + (conv_k - 1)
    x = upfirdn2d(x, kk, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=factor)


def naive_upsample_2d(x, factor=2):
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def naive_downsample_2d(x, factor=2):
    return F.avg_pool2d(x, factor)
