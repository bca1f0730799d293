"""Feature extraction speed: `python -m evaluations.fid` vs `python -m pytorch_fid`.

Both save the statistics of the same image folder with the same Inception weights, batch size,
dims and loader workers; each is timed as a whole command (start-up included, printed
separately as the time of a 2-image run) and the two statistics files are compared.

    python benchmarks/fid_features.py --num_images 200 --dims 2048 [--folder DIR]
        [--inception_weights PATH] [--nproc 2]   # --nproc: ours under torchrun with N ranks

Without --inception_weights, random weights in pytorch-fid's layout are written to a temporary
TORCH_HOME (the speed does not depend on the values); with it, the file is used by both tools.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from evaluations import inception  # noqa: E402 (path)


def make_folder(path, n, size, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    for i in range(n):
        coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(os.path.join(path, f"{i:06d}.png"))


def timed(cmd, env):
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", default="", help="image folder (default: generated random images)")
    p.add_argument("--num_images", type=int, default=200)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--dims", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--nproc", type=int, default=1, help="ranks for evaluations.fid (torchrun)")
    p.add_argument("--inception_weights", default="")
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="fid_features-")
    try:
        home = os.path.join(work, "torch_home")
        target = os.path.join(home, "hub", "checkpoints", inception.WEIGHTS_NAME)
        os.makedirs(os.path.dirname(target))
        if args.inception_weights:
            os.symlink(os.path.abspath(args.inception_weights), target)
        else:
            inception.make_random_weights(target, calibration_batches=1, batch_size=2)
        folder = args.folder
        if not folder:
            folder = os.path.join(work, "images")
            make_folder(folder, args.num_images, args.image_size)
        tiny = os.path.join(work, "tiny")
        make_folder(tiny, 2, args.image_size, seed=1)
        n = len([f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in (".png", ".jpg", ".jpeg")])

        env = dict(os.environ, TORCH_HOME=home, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        common = ["--dims", str(args.dims), "--batch-size", str(args.batch_size), "--num-workers",
                  str(args.num_workers), "--device", args.device, "--save-stats"]
        ours_prefix = [sys.executable, "-m", "evaluations.fid"]
        if args.nproc > 1:
            ours_prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={args.nproc}", "-m", "evaluations.fid"]
        theirs_prefix = [sys.executable, "-m", "pytorch_fid"]

        results = {}
        for name, prefix in (("pytorch_fid", theirs_prefix), ("evaluations.fid", ours_prefix)):
            startup = timed(prefix + common + [tiny, os.path.join(work, f"{name}-tiny.npz")], env)
            total = timed(prefix + common + [folder, os.path.join(work, f"{name}.npz")], env)
            results[name] = (total, startup)
        theirs, ours = os.path.join(work, "pytorch_fid.npz"), os.path.join(work, "evaluations.fid.npz")
        with np.load(theirs) as a, np.load(ours) as b:
            mu_diff = np.abs(a["mu"] - b["mu"]).max() / max(np.abs(a["mu"]).max(), 1e-30)
            sigma_diff = np.abs(a["sigma"] - b["sigma"]).max() / max(np.abs(a["sigma"]).max(), 1e-30)

        print(f"{n} images {args.image_size}px, dims {args.dims}, batch {args.batch_size}, device {args.device}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')}, ours on {args.nproc} rank(s)")
        for name, (total, startup) in results.items():
            rate = n / max(total - startup, 1e-9)
            print(f"{name:16s} total {total:7.2f} s  (2-image run {startup:6.2f} s)  "
                  f"~{rate:6.2f} img/s net of start-up")
        t_ref, t_ours = results["pytorch_fid"][0], results["evaluations.fid"][0]
        print(f"speed-up (total time) {t_ref / t_ours:.2f}x; relative max difference mu {mu_diff:.2e}, "
              f"sigma {sigma_diff:.2e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
