"""Data-parallel scaling of each family's training: img/s with 1 and 2 ranks, both launchers.

    python benchmarks/ddp_scaling.py [--families improved_diffusion,ddgan,gans]
        [--launchers mpiexec,torchrun] [--seconds 20] [--data_dir DIR]

Every run is the real entry point started by launch/run.sh on the family's digits flag file,
with OMP_NUM_THREADS=1 per rank (so 2 ranks use 2 cores, as 2 GPUs would), the SAME per-rank
batch (so 2 ranks train twice the images per step), gloo. Throughput is read off the run's
own log rows as they are printed: the time between the second row and the last, divided into
the images trained in between, so start-up, the first (warm-up) steps and the final checkpoint
are not counted. After `--seconds` of rows the run is stopped with SIGTERM (a graceful stop).

Prints one row per family and launcher: img/s with 1 rank, with 2 ranks, and the ratio
(ideal 2.0), the median of `--rounds` back-to-back pairs (each round's ratio follows). Needs 2
idle cores: figures taken while something else runs say little, so the load average is printed
with them.
"""

import argparse
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# flag file, per-rank batch flags, log interval: steps of ~0.1-1 s on one core
FAMILIES = {
    "improved_diffusion": ("flags/improved_diffusion/digits_tiny.sh", ["--batch_size", "16"], 2),
    "ddgan": ("flags/ddgan/digits16.sh", ["--batch_size", "16"], 2),
    "gans": ("flags/gans/dcgan_digits.sh", ["--batch_size", "32"], 5),
}
ROW = re.compile(rb"^\| step\s+\| (\d+)\s", re.M)


def env():
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, PYTHONUNBUFFERED="1",
             OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["PATH"] = os.path.dirname(sys.executable) + os.pathsep + e.get("PATH", "")
    return e


def measure(family, launcher, nproc, data_dir, seconds, workdir):
    flag_file, batch, log_interval = FAMILIES[family]
    per_rank = int(batch[1])
    logdir = os.path.join(workdir, f"{family}-{launcher}-{nproc}")
    cmd = ["bash", os.path.join(ROOT, "launch", "run.sh"), launcher, str(nproc), os.path.join(ROOT, flag_file),
           f"{family}.train", "--data_dir", data_dir, "--logdir", logdir, *batch, "--log_interval", str(log_interval),
           "--max_steps", "1000000", "--save_interval", "1000000"]
    if family == "ddgan":
        cmd += ["--num_epoch", "1000000", "--save_ckpt_every", "1000000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, rows = b"", []
    deadline = time.monotonic() + seconds + 300
    try:
        while time.monotonic() < deadline:
            if not select.select([proc.stdout], [], [], 5)[0]:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            now = time.monotonic()
            seen += chunk
            for m in ROW.finditer(chunk):
                rows.append((int(m[1]), now))
            if len(rows) >= 3 and rows[-1][1] - rows[1][1] >= seconds:
                break
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if len(rows) < 3:
        tail = seen[-3000:].decode(errors="replace")
        sys.exit(f"ddp_scaling: {family} under {launcher} x{nproc} printed {len(rows)} log rows:\n{tail}")
    (s0, t0), (s1, t1) = rows[1], rows[-1]
    shutil.rmtree(logdir, ignore_errors=True)
    return (s1 - s0) * per_rank * nproc / (t1 - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--launchers", default="mpiexec,torchrun")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per run (after warm-up)")
    p.add_argument("--data_dir", default="", help="an image folder (default: the digits, exported to a temp dir)")
    p.add_argument("--rounds", type=int, default=3,
                   help="1-rank / 2-rank pairs per family and launcher, run back to back; the median ratio is quoted")
    args = p.parse_args()
    families = args.families.split(",")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        p.error(f"--families: unknown {', '.join(unknown)} (choose from {', '.join(FAMILIES)})")
    workdir = tempfile.mkdtemp(prefix="ddp-scaling-")
    try:
        data_dir = args.data_dir
        if not data_dir:
            out = os.path.join(workdir, "digits16")
            subprocess.run([sys.executable, os.path.join(ROOT, "datasets", "digits.py"), "--out", out, "--size", "16"],
                           check=True, capture_output=True)
            data_dir = os.path.join(out, "train")
        print(f"load average before: {open('/proc/loadavg').read().split()[0]} "
              f"({os.cpu_count()} cores); OMP_NUM_THREADS=1 per rank, same per-rank batch, gloo")
        print(f"{'family':<20} {'launcher':<9} {'1 rank img/s':>13} {'2 ranks img/s':>14} {'ratio':>6}  rounds")
        for family in families:
            for launcher in args.launchers.split(","):
                pairs = []
                for _ in range(args.rounds):
                    # each ratio from a pair measured back to back: the machine's speed drifts
                    one = measure(family, launcher, 1, data_dir, args.seconds, workdir)
                    two = measure(family, launcher, 2, data_dir, args.seconds, workdir)
                    pairs.append((two / one, one, two))
                ratio, one, two = sorted(pairs)[len(pairs) // 2]
                each = " ".join(f"{r:.2f}" for r, _, _ in pairs)
                print(f"{family:<20} {launcher:<9} {one:>13.1f} {two:>14.1f} {ratio:>6.2f}  {each}", flush=True)
        print(f"load average after: {open('/proc/loadavg').read().split()[0]}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
