"""Sampling throughput of improved_diffusion, optionally side by side with openai's.

    python benchmarks/sample_throughput.py [--reference PATH/TO/openai-improved-diffusion]
        [--batch_size 16] [--respacing 50] [--rounds 1]

The training benchmark's config (32 px, 64 channels, 2 res blocks, attention 16,8,
learn_sigma, cosine, 4000 steps) respaced to `--respacing` steps, ancestral sampling of one
batch, fp32, one process. Rows, each in its own child process on the same noise:

- ours, batched: `p_sample_loop` on the whole batch (what a GPU run does);
- ours, batch-invariant: fixed blocks of 8 rows per model call (`--batch_invariant`, the CPU
  default of improved_diffusion.sample, which makes npz files independent of batch size and
  rank count);
- openai: its `p_sample_loop` on the whole batch (with --reference).

Printed: img/s, peak RSS, and ratios to openai. Untrained weights: speed does not depend on them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from train_throughput import CONFIG, ROOT, peak_rss_mb  # noqa: E402 (path)


def build(create, defaults, respacing):
    import torch

    torch.manual_seed(0)
    kw = defaults()
    kw.update(CONFIG)
    kw["timestep_respacing"] = str(respacing)
    model, diffusion = create(**kw)
    model.eval()
    return model, diffusion


def timed_sampling(model, diffusion, batch_size):
    import torch

    noise = torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t0 = time.perf_counter()
        diffusion.p_sample_loop(model, noise.shape, noise=noise, clip_denoised=True, device=noise.device)
        return time.perf_counter() - t0


def child(impl, args):
    if impl == "openai":
        import numpy as np

        if not hasattr(np, "int"):  # removed in NumPy 1.24; the reference's resample.py uses it
            np.int = int
        sys.path.insert(0, os.path.abspath(args.reference))
    else:
        sys.path.insert(0, ROOT)
    from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults

    model, diffusion = build(create_model_and_diffusion, model_and_diffusion_defaults, args.respacing)
    if impl == "ours-invariant":
        from improved_diffusion.sample import SAMPLE_BLOCK, InBlocks

        model = InBlocks(model, range(args.batch_size), SAMPLE_BLOCK)  # sample_to_npz's first batch
    return timed_sampling(model, diffusion, args.batch_size)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default="", help="checkout of openai/improved-diffusion to compare with")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--respacing", type=int, default=50, help="sampling steps")
    p.add_argument("--rounds", type=int, default=1, help="alternate the implementations this many times")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    reference_file = args.reference and os.path.join(args.reference, "improved_diffusion", "gaussian_diffusion.py")
    if args.reference and not os.path.isfile(reference_file):
        p.error(f"--reference {args.reference}: not a checkout of openai/improved-diffusion")
    if args.child:
        seconds = child(args.child, args)
        print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))
        return

    impls = ["ours", "ours-invariant"] + (["openai"] if args.reference else [])
    results = {impl: {"seconds": [], "rss": 0.0} for impl in impls}
    for _ in range(args.rounds):
        for impl in impls:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--batch_size", str(args.batch_size),
                   "--respacing", str(args.respacing)] + (["--reference", args.reference] if args.reference else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"sample_throughput: error: the {impl} run failed (exit {proc.returncode})")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[impl]["seconds"].append(r["seconds"])
            results[impl]["rss"] = max(results[impl]["rss"], r["peak_rss_mb"])
    print(f"config: {CONFIG}, {args.respacing} sampling steps, batch {args.batch_size}, fp32, "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')} threads, {args.rounds} round(s)")
    for impl, r in results.items():
        r["img_per_s"] = args.batch_size / statistics.median(r["seconds"])
        print(f"{impl:15s} {r['img_per_s']:.3f} img/s  peak RSS {r['rss']:.0f} MB")
    if "openai" in results:
        for impl in ("ours", "ours-invariant"):
            print(f"ratio {impl}/openai: {results[impl]['img_per_s'] / results['openai']['img_per_s']:.2f}x img/s, "
                  f"{results[impl]['rss'] / results['openai']['rss']:.2f}x peak RSS")


if __name__ == "__main__":
    main()
