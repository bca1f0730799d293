"""Fréchet distance of a sample set: from its covariance (a d x d eigenproblem) against from its
rows (evaluations.frechet.frechet_distance_of_samples, an n x n one when n < d).

    python benchmarks/fd_of_samples.py [--dims 2048] [--samples 8,500,1000] [--rounds 3]

Prints, per sample count, the seconds of each form (median of --rounds), their ratio and the
relative difference of the two values. This is the cost that a 50-resample bootstrap of FID
multiplies by 51.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluations.frechet import frechet_distance, frechet_distance_of_samples


def seconds(fn, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), value


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, default=2048)
    p.add_argument("--samples", default="8,500,1000")
    p.add_argument("--reference", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(a.reference, a.dims)) @ rng.normal(size=(a.dims, a.dims)) * 0.05
    mu, sigma = ref.mean(0), np.cov(ref, rowvar=False)
    print(f"d = {a.dims}, reference {a.reference} rows, median of {a.rounds} rounds")
    print(f"{'n':>6} {'covariance s':>13} {'rows s':>8} {'ratio':>7} {'rel. diff':>10}")
    for n in (int(x) for x in a.samples.split(",")):
        f = rng.normal(size=(n, a.dims))
        t_cov, v_cov = seconds(lambda: frechet_distance(f.mean(0), np.cov(f, rowvar=False), mu, sigma), a.rounds)
        t_rows, v_rows = seconds(lambda: frechet_distance_of_samples(f, mu, sigma), a.rounds)
        print(f"{n:>6} {t_cov:>13.3f} {t_rows:>8.3f} {t_cov / t_rows:>6.1f}x {abs(v_cov - v_rows) / abs(v_cov):>10.1e}")


if __name__ == "__main__":
    main()
