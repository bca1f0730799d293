"""DDGAN sampling speed: the CIFAR-10 generator (48.4M parameters, 4 steps) at batch 16.

  python benchmarks/ddgan_sampling.py [--device cpu|cuda] [--batch_size 16] [--repeats 3]
                                      [--num_samples 0] [--threads N]

Prints images/s of full 4-step sampling, the share of that time spent in FIR resampling
(upfirdn2d, timed around every call), and, side by side on the same shapes, our FIR
(one depthwise conv/conv_transpose) against the reference's CPU formulation (every channel
as a separate image, zero insertion by padding, one single-channel conv). With --num_samples N
it also times sampling N images (the seed's anchor: 50k in 333 s on its GPU; the paper: 0.21 s
per 100 images on a V100). Weights are random: speed does not depend on them.
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddgan import upfirdn
from ddgan.diffusion import Diffusion
from ddgan.ncsnpp import GeneratorConfig, NCSNpp

CIFAR10 = GeneratorConfig(image_size=32, num_channels=3, num_channels_dae=128, ch_mult=(1, 2, 2, 2),
                          num_res_blocks=2, attn_resolutions=(16,), n_mlp=4, nz=100, z_emb_dim=256)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class FirTimer:
    """Wraps upfirdn.upfirdn2d (every FIR op of the generator goes through it) with a clock."""

    def __init__(self, device):
        self.device, self.seconds, self.calls, self.shapes = device, 0.0, 0, []
        self.original = upfirdn.upfirdn2d

    def __enter__(self):
        def timed(x, k, up=1, down=1, pad=(0, 0)):
            sync(self.device)
            t0 = time.perf_counter()
            out = self.original(x, k, up=up, down=down, pad=pad)
            sync(self.device)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.shapes.append((tuple(x.shape), tuple(k.shape), up, down, tuple(pad)))
            return out
        upfirdn.upfirdn2d = timed
        return self

    def __exit__(self, *exc):
        upfirdn.upfirdn2d = self.original


def upfirdn2d_per_channel(x, k, up=1, down=1, pad=(0, 0)):
    """The reference's CPU path, re-expressed: every channel as its own 1-channel image."""
    n, c, h, w = x.shape
    kh, kw = k.shape
    p0, p1 = pad
    y = x.reshape(n * c, 1, h, 1, w, 1)
    y = F.pad(y, [0, up - 1, 0, 0, 0, up - 1]).reshape(n * c, 1, h * up, w * up)
    y = F.pad(y, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    y = y[:, :, max(-p0, 0):y.shape[2] - max(-p1, 0), max(-p0, 0):y.shape[3] - max(-p1, 0)]
    wk = torch.flip(torch.as_tensor(k, dtype=x.dtype, device=x.device), [0, 1]).reshape(1, 1, kh, kw)
    y = F.conv2d(y, wk)[:, :, ::down, ::down]
    return y.reshape(n, c, y.shape[2], y.shape[3])


def time_fir(shapes, fn, device, repeats):
    inputs = [(torch.randn(s, device=device), torch.ones(ks).numpy() / (ks[0] * ks[1]), up, down, pad)
              for s, ks, up, down, pad in shapes]
    for x, k, up, down, pad in inputs:  # warm-up
        fn(x, k, up=up, down=down, pad=pad)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for x, k, up, down, pad in inputs:
            fn(x, k, up=up, down=down, pad=pad)
    sync(device)
    return (time.perf_counter() - t0) / repeats


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num_samples", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    g = NCSNpp(CIFAR10).to(device).eval()
    diffusion = Diffusion(4)
    n = args.batch_size
    params = sum(p.numel() for p in g.parameters())
    print(f"device {device}, {torch.get_num_threads()} threads, generator {params:,} parameters, "
          f"4 steps, batch {n}")

    def sample_batch(batch):
        x = torch.randn(batch, 3, 32, 32, device=device)
        return diffusion.sample(g, x, CIFAR10.nz)

    with torch.no_grad():
        sample_batch(n)  # warm-up (allocator, kernels)
        sync(device)
        with FirTimer(device) as fir:
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                sample_batch(n)
            sync(device)
            total = time.perf_counter() - t0
        per_batch = total / args.repeats
        print(f"sampling: {n * args.repeats / total:.3f} img/s ({per_batch:.3f} s per batch of {n})")
        print(f"FIR (upfirdn2d): {fir.calls // args.repeats} calls per batch, "
              f"{fir.seconds / args.repeats:.3f} s per batch = {100 * fir.seconds / total:.1f}% of sampling")
        shapes = fir.shapes[: fir.calls // args.repeats]
        ours = time_fir(shapes, upfirdn.upfirdn2d, device, args.repeats)
        theirs = time_fir(shapes, upfirdn2d_per_channel, device, args.repeats)
        print(f"FIR alone, one batch's calls: ours {ours:.4f} s, per-channel (reference CPU "
              f"formulation) {theirs:.4f} s, ratio {theirs / ours:.2f}x")
        if args.num_samples:
            t0 = time.perf_counter()
            done = 0
            while done < args.num_samples:
                b = min(n, args.num_samples - done)
                sample_batch(b)
                done += b
            sync(device)
            secs = time.perf_counter() - t0
            print(f"{args.num_samples} samples in {secs:.1f} s = {args.num_samples / secs:.1f} img/s "
                  f"(seed 003: 50000 in 333 s = 150 img/s; paper: 0.21 s / 100 = 476 img/s, V100)")


if __name__ == "__main__":
    main()
