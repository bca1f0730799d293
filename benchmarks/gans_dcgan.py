"""DCGAN speed on this machine: training step and sampling throughput, side by side.

    python benchmarks/gans_dcgan.py [--image_sizes 32,64] [--batch_size 16] [--steps 5] [--threads 2]

Measures, in one process and one run (CPU figures move 2x between hosts; compare rows of the
same run, not numbers across days):
- train: one full GANTrainer step (D update + G update) at the seed-003 widths (nz 100,
  ngf = ndf = 64), images per second;
- sample: G forward in eval mode, images per second;
- the ratio of the two (how many images sampling makes in the time training consumes one).
Prints a table and the 64 px / 32 px cost ratios.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gans import dcgan
from gans.trainer import GANTrainer


def timed(fn, repeats):
    fn()  # warm-up: allocator and oneDNN kernel selection
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def measure(image_size, batch_size, steps):
    torch.manual_seed(0)
    G, D = dcgan.create_models("dcgan", image_size)
    t = GANTrainer(G, D, lr_g=1.6e-4, lr_d=1.25e-4, device="cpu")
    x = torch.rand(batch_size, 3, image_size, image_size) * 2 - 1
    step_s = timed(lambda: t.update([(x, None)]), steps)
    G.eval()
    z = torch.randn(batch_size, 100, 1, 1)
    with torch.no_grad():
        sample_s = timed(lambda: G(z), steps)
    return batch_size / step_s, batch_size / sample_s


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image_sizes", default="32,64")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = {}
    print(f"DCGAN nz 100, ngf = ndf = 64, fp32, CPU, {a.threads} threads, batch {a.batch_size}")
    print(f"{'px':>4} {'train img/s':>12} {'sample img/s':>13} {'sample/train':>13}")
    for size in (int(s) for s in a.image_sizes.split(",")):
        train, sample = measure(size, a.batch_size, a.steps)
        rows[size] = (train, sample)
        print(f"{size:>4} {train:>12.1f} {sample:>13.1f} {sample / train:>13.1f}")
    if 32 in rows and 64 in rows:
        print(f"64 px / 32 px cost: train x{rows[32][0] / rows[64][0]:.2f}, sample x{rows[32][1] / rows[64][1]:.2f}")


if __name__ == "__main__":
    main()
