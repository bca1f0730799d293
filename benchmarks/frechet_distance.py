"""Fréchet distance: evaluations.frechet vs pytorch-fid's calculate_frechet_distance.

Same inputs, same process: covariances of `--samples` random feature rows in `--dims`
dimensions (correlated, so the matrices look like Inception statistics rather than the
identity). Prints both times (best of `--repeats`), their ratio and the relative difference.

    python benchmarks/frechet_distance.py --dims 2048 --samples 5000
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pytorch_fid.fid_score import calculate_frechet_distance

from evaluations.frechet import frechet_distance


def statistics(rng, samples, dims):
    mixing = rng.standard_normal((dims, dims)) / np.sqrt(dims)
    x = np.abs(rng.standard_normal((samples, dims)) @ mixing)  # non-negative, like pooled ReLUs
    return x.mean(0), np.cov(x, rowvar=False)


def best_time(fn, repeats):
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    mu1, s1 = statistics(rng, args.samples, args.dims)
    mu2, s2 = statistics(rng, args.samples, args.dims)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's deprecation of sqrtm(disp=...)
        t_ref, v_ref = best_time(lambda: calculate_frechet_distance(mu1, s1, mu2, s2), args.repeats)
    t_ours, v_ours = best_time(lambda: frechet_distance(mu1, s1, mu2, s2), args.repeats)

    print(f"d={args.dims} n={args.samples} threads={os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"pytorch-fid calculate_frechet_distance: {t_ref:8.3f} s  value {v_ref:.10f}")
    print(f"evaluations.frechet.frechet_distance:   {t_ours:8.3f} s  value {v_ours:.10f}")
    print(f"speed-up {t_ref / t_ours:.1f}x  relative difference {abs(v_ours - v_ref) / abs(v_ref):.2e}")


if __name__ == "__main__":
    main()
