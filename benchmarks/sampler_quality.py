"""FD-digits and s/image of improved_diffusion's samplers on one trained digits checkpoint.

    python benchmarks/sampler_quality.py RUN_DIR [--num_samples 500] [--rounds 1] [--nproc 1] [--seeds 0]

RUN_DIR is an improved_diffusion training run on the digits, e.g. the main job's
`<compare dir>/improved_diffusion/train`. Each sampler runs the real entry point
(`improved_diffusion.sample` through launch/run.sh, the run's own flag file settings from its
options.json) with sample seeds from --seed S (samples S..S+N-1 of the CLI's per-index
generators), so every sampler starts from the same x_T. Printed per sampler and seed: network
evaluations per image, FD-digits ± bootstrap std, precision, recall, and the sampling job's
wall seconds per image (process start included; median of --rounds). With several --seeds the
mean FD-digits over them follows. The last lines check issue #18's targets: a 20-NFE sampler
(dpmpp_2m, and its stochastic form dpmpp_2m_sde) within 10% of the 100-step ancestral
FD-digits, and dpmpp_2m at 10 NFE better than ddim-10.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from evaluations import compare  # noqa: E402 (path)

SAMPLERS = [  # label, flags, NFE
    ("ddpm-100", ["--timestep_respacing", "100"], 100),
    ("ddim-10", ["--timestep_respacing", "ddim10", "--use_ddim", "True"], 10),
    ("ddim-20", ["--timestep_respacing", "ddim20", "--use_ddim", "True"], 20),
    ("dpmpp_2m-10", ["--sampler", "dpmpp_2m", "--steps", "10", "--time_schedule", "logsnr"], 10),
    ("dpmpp_2m-20", ["--sampler", "dpmpp_2m", "--steps", "20", "--time_schedule", "logsnr"], 20),
    ("dpmpp_2m_sde-10", ["--sampler", "dpmpp_2m_sde", "--steps", "10", "--time_schedule", "logsnr"], 10),
    ("dpmpp_2m_sde-20", ["--sampler", "dpmpp_2m_sde", "--steps", "20", "--time_schedule", "logsnr"], 20),
    ("heun-19", ["--sampler", "heun", "--steps", "10", "--time_schedule", "karras"], 19),
    # where the ODE converges: dpmpp_2m with more steps, and eta-0 DDIM over every timestep (digits_tiny: T = 100)
    ("dpmpp_2m-50", ["--sampler", "dpmpp_2m", "--steps", "50", "--time_schedule", "logsnr"], 50),
    ("ddim-all", ["--sampler", "ddim", "--steps", "100"], 100),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--num_samples", type=int, default=500)
    p.add_argument("--batch_size", type=int, default=125)
    p.add_argument("--rounds", type=int, default=1, help="timing rounds per sampler (the FD is the same each round)")
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated sampler labels")
    p.add_argument("--seeds", default="0", help="comma-separated --seed values: one sampling of each sampler per seed")
    a = p.parse_args(argv)
    launcher = "local" if a.nproc == 1 else compare.pick_launcher(a.nproc)
    only = {x for x in a.only.split(",") if x}
    out = tempfile.mkdtemp(prefix="sampler_quality-")
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHON=os.environ.get("PYTHON", sys.executable))
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    results = {}  # label -> FD-digits per seed
    print(f"{os.uname().machine}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {a.run_dir}; "
          f"{a.num_samples} samples, {launcher} x {a.nproc}")
    print(f"{'sampler':<16} {'NFE':>4} {'seed':>5} {'FD-digits':>16} {'precision':>9} {'recall':>7} {'s/image':>8}")
    for label, flags, nfe in SAMPLERS:
        if only and label not in only:
            continue
        for seed in seeds:
            times = []
            for r in range(a.rounds):
                d = os.path.join(out, f"{label}-{seed}-{r}")
                argv_ = compare.run_sh(launcher, a.nproc, "flags/improved_diffusion/digits_tiny.sh",
                                       "improved_diffusion.sample", "--model_path", a.run_dir,
                                       "--timestep_respacing", "", "--num_samples", a.num_samples,
                                       "--batch_size", a.batch_size, "--seed", seed, "--logdir", d, *flags)
                start = time.time()
                proc = subprocess.run(argv_, cwd=ROOT, env=env, capture_output=True, text=True)
                times.append(time.time() - start)
                if proc.returncode != 0:
                    sys.exit(f"{label}: sampling failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1]}")
            m = compare.judge(compare.find_samples(d))
            s = statistics.median(times) / a.num_samples
            results.setdefault(label, []).append(m["fd_digits"])
            print(f"{label:<16} {nfe:>4} {seed:>5} {m['fd_digits']:>9.1f} ± {m['fd_std']:<5.1f} "
                  f"{m['precision']:>9.3f} {m['recall']:>7.3f} {s:>8.4f}", flush=True)
    mean = {label: statistics.mean(fds) for label, fds in results.items()}
    if len(seeds) > 1:
        for label, fds in results.items():
            print(f"{label:<16} mean FD-digits over {len(fds)} seeds: {mean[label]:.1f} "
                  f"(std {statistics.stdev(fds):.1f})")
    for fast in ("dpmpp_2m-20", "dpmpp_2m_sde-20"):
        if {"ddpm-100", fast} <= mean.keys():
            print(f"{fast} / ddpm-100 FD-digits: {mean[fast] / mean['ddpm-100']:.3f} (target <= 1.10)")
    if {"ddim-10", "dpmpp_2m-10"} <= mean.keys():
        print(f"dpmpp_2m-10 {mean['dpmpp_2m-10']:.1f} vs ddim-10 {mean['ddim-10']:.1f} (target: lower)")


if __name__ == "__main__":
    main()
