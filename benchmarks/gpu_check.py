"""The GPU check: one command that trains, samples and measures every family on the GPUs of one node.

    bash benchmarks/gpu_check.sh [--out benchmarks/gpu_check_results.md] [--steps 200]
                                 [--data_dir DIR] [--inception_weights PATH] [--dry_run]

Writes one markdown table (atomically: temp file + os.replace): train, dist, flops, sample and fid
rows for every family (what each row measures: benchmarks/gpu_check_table.py).

A failed job is a row with status failed and its error's last line; the other jobs still run.
--dry_run does all of it on the CPU at toy sizes (the digits flag files, a few steps, dims 64
features, one process per run plus one gloo run of 2 processes) to show the script works
before a GPU is seen. Training data: the bundled digits (datasets/digits.py) at the flag
files' size, read as RGB where the model is, so the node needs no download; --data_dir takes
a real folder (e.g. CIFAR-10's) instead. The driver itself never imports torch: every
measurement is a child process, so a crash or an out-of-memory costs one row.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # run as a script: the repository's packages (none of these imports torch)
sys.path.insert(0, HERE)  # loaded from its path (the tests): its jobs and table modules beside it
from gpu_check_jobs import JobFailed, _build_task, child_env_info, img_per_sec, last_line, run_child, run_job  # noqa: E402, F401 (path, re-export)
from gpu_check_table import COLUMNS, FP32_CONVENTION, NOT_TESTED, PEAK_TFLOPS, fmt, markdown, peak_tflops, write_atomic  # noqa: E402, F401 (path, re-export)

from trainkit import flagfile, progress_file  # noqa: E402 (path)

FAMILIES = ("improved_diffusion", "ddgan", "dcgan")
PRECISIONS = ("fp32", "fp16", "bf16")
MODULE = {"improved_diffusion": "improved_diffusion.train", "ddgan": "ddgan.train", "dcgan": "gans.train"}

# (flag file, extra flags) per family. GPU: the CIFAR-10 configurations; checkpoints only at the
# end (DDGAN's flag file would also write one every 25 epochs, i.e. inside the timed steps).
GPU_JOBS = {
    "improved_diffusion": ("flags/improved_diffusion/cifar10_uncond_hybrid_cosine.sh", ["--save_interval", "100000"]),
    # --save_content_every too: the flag file's --save_content would write content.pth (and a
    # checkpoint) every 50 epochs inside a long --steps
    "ddgan": ("flags/ddgan/cifar10.sh", ["--save_ckpt_every", "100000", "--save_content_every", "100000",
                                         "--save_interval", "0"]),
    "dcgan": ("flags/gans/dcgan_cifar10.sh", ["--save_interval", "100000"]),
}
# --dry_run: the digits flag files made smaller still (the sizes of the test suite's tiny runs).
DRY_JOBS = {
    "improved_diffusion": ("flags/improved_diffusion/digits_tiny.sh",
                           ["--diffusion_steps", "50", "--batch_size", "4",
                            "--save_interval", "100000"]),
    "ddgan": ("flags/ddgan/digits16.sh",
              ["--num_channels_dae", "8", "--ngf", "4", "--nz", "8", "--z_emb_dim", "16", "--t_emb_dim", "16",
               "--n_mlp", "1", "--lazy_reg", "2", "--batch_size", "4", "--d_steps", "1",
               "--save_ckpt_every", "100000", "--save_interval", "0"]),
    "dcgan": ("flags/gans/dcgan_digits.sh",
              ["--nz", "8", "--ngf", "8", "--ndf", "8", "--batch_size", "8", "--save_interval", "100000"]),
}

# Unanchored, in case a launcher prefixes its workers' lines with their rank.
STEP_ROW = re.compile(r"\|\s*step\s*\|")  # trainkit.logger's table: one `| step | N |` line per log row
SAMPLING = re.compile(r"sampling \d+ images from")  # ddgan.sample's log lines around the sampling
WROTE = re.compile(r"\bwrote (\S+\.npz)")




def python():
    # the interpreter launch/run.sh uses, so a job and its children run on the same one
    return os.environ.get("PYTHON") or sys.executable




def read_progress(run_dir):
    """A run's progress.csv rows (trainkit's one reader: numbers as floats, blank cells left out)."""
    return progress_file.read_progress(run_dir)


def flag_file_argv(flag_file, role="TRAIN"):
    """The flags launch/run.sh would pass from `flag_file` to a module of `role`."""
    return flagfile.flag_file_argv(os.path.join(ROOT, flag_file), role)


# --- the driver -----------------------------------------------------------------------------

class Check:
    def __init__(self, args):
        self.args = args
        self.rows = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = ROOT + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        self.env["PYTHONUNBUFFERED"] = "1"  # each log row's table reaches us when it is written
        # launch/run.sh starts its ranks with $PYTHON (else python3 on PATH): the driver's interpreter
        self.env["PYTHON"] = python()
        if args.dry_run:
            self.env["CUDA_VISIBLE_DEVICES"] = ""
            self.env.setdefault("TRAINKIT_DIST_TIMEOUT", "120")
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OPENAI_LOGDIR"):
            self.env.pop(k, None)
        self.work = args.workdir or tempfile.mkdtemp(prefix="gpu-check-")
        os.makedirs(self.work, exist_ok=True)
        self.jobs = DRY_JOBS if args.dry_run else GPU_JOBS
        self.info = {"cuda": False, "gpus": 0, "device": "cpu", "torch": "?"}
        self.flops = {}
        self.train_dirs = {}

    def add(self, section, job, status, **cells):
        row = dict.fromkeys(COLUMNS, "")
        row.update(section=section, job=job, status=status, **{k: str(v) for k, v in cells.items()})
        self.rows.append(row)
        print(f"gpu_check: {section} {job}: {status} {row['img/s'] and row['img/s'] + ' img/s'} {row['note']}",
              flush=True)

    def child(self, name, *argv, timeout=None):
        log = os.path.join(self.work, f"{name}.log")
        out = os.path.join(self.work, f"{name}.json")
        run_job([python(), os.path.abspath(__file__), "--child", name, "--child_out", out, *argv], log,
                timeout or self.args.timeout, self.env)
        with open(out) as f:
            return json.load(f)

    def nproc(self):
        return 1 if self.args.dry_run else max(1, self.info["gpus"])

    def launcher(self):
        n = self.nproc()
        return ("local", 1) if self.args.dry_run else ("torchrun", n)

    @staticmethod
    def backend(n, cuda):
        # trainkit.dist: a group only when more than one rank; nccl with CUDA, else gloo
        return "no group" if n == 1 else ("nccl" if cuda else "gloo")

    def prepare_data(self):
        if self.args.data_dir:
            return {f: self.args.data_dir for f in FAMILIES}
        sizes = {}
        for family, (flag_file, extra) in self.jobs.items():
            argv = flag_file_argv(flag_file) + extra
            size = int(argv[len(argv) - 1 - argv[::-1].index("--image_size") + 1])
            sizes[family] = size
        folders = {}
        for size in sorted(set(sizes.values())):
            out = os.path.join(self.work, f"digits{size}")
            run_job([python(), os.path.join(ROOT, "datasets", "digits.py"), "--out", out, "--size", size],
                    os.path.join(self.work, f"digits{size}.log"), self.args.timeout, self.env)
            folders[size] = os.path.join(out, "train")
        return {f: folders[s] for f, s in sizes.items()}

    def train_argv(self, family, precision, data_dir, logdir):
        flag_file, extra = self.jobs[family]
        return [flag_file, MODULE[family], *extra, "--precision", precision, "--data_dir", data_dir,
                "--logdir", logdir, "--max_steps", self.args.steps, "--log_interval", self.args.log_interval]

    def train(self, family, precision, data_dir, launcher, n, tag="", compile_=False, extra=()):
        name = f"train-{family}-{precision}{tag}"
        logdir = os.path.join(self.work, name)
        cmd = ["bash", os.path.join(ROOT, "launch", "run.sh"), launcher, n,
               *self.train_argv(family, precision, data_dir, logdir), "--compile", str(compile_), *extra]
        where = f"{launcher} x {n} ({self.backend(n, self.info['cuda'])})"
        cells = dict(family=family, precision=precision, compile="yes" if compile_ else "no", launcher=where)
        try:
            # a --compile job first builds its kernels (inductor's C++ on a CPU: a minute or more
            # from a cold cache on a loaded machine): three times the time
            seen, seconds = run_job(cmd, os.path.join(self.work, f"{name}.log"),
                                    self.args.timeout * (3 if compile_ else 1), self.env, watch=[STEP_ROW])
            rows = read_progress(logdir)
            rate, how = img_per_sec(rows, [t for t, _ in seen[STEP_ROW.pattern]])
        except (JobFailed, OSError, ValueError, KeyError) as e:
            self.add("train", name[6:], "failed", **cells, note=last_line(str(e)))
            return
        if not tag or tag == "-compiled":
            self.train_dirs.setdefault((family, precision), logdir)
        cells.update({"img/s": fmt(rate), "seconds": f"{seconds:.1f}"})
        flops = self.flops.get(family, {})
        if "flops_per_image" in flops:
            achieved = flops["flops_per_image"] * rate
            cells["GFLOP/img"] = f"{flops['flops_per_image'] / 1e9:.4g}"
            cells["TFLOP/s"] = f"{achieved / 1e12:.4g}"
            peak = peak_tflops(self.info["device"], precision) if self.info["cuda"] else None
            cells["MFU"] = f"{100 * achieved / (peak * 1e12 * n):.3g}%" if peak else "n/a"
        else:
            cells["MFU"] = "n/a"
        steps = rows[-1].get("step")
        self.add("train", name[6:], "ok", **cells, note=f"{int(steps) if steps is not None else '?'} steps; {how}")

    def compiled(self, data_dirs):
        """--compile rows beside the eager ones: every family in bf16 on a GPU; on a CPU dry run
        only DCGAN (inductor's C++ build of the others takes minutes there)."""
        if self.args.dry_run:
            self.train("dcgan", "fp32", data_dirs["dcgan"], "local", 1, tag="-compiled", compile_=True)
            return
        for family in FAMILIES:
            self.train(family, "bf16", data_dirs[family], "local", 1, tag="-compiled", compile_=True)

    def distributed(self, data_dirs):
        """The multi-rank path: on 2+ GPUs a 2-rank NCCL row per family and a --sync_bn DCGAN row
        (nn.SyncBatchNorm runs on CUDA only); on one GPU a row saying it was not tested; a dry
        run: one 2-rank gloo DCGAN row (the CPU's distributed path)."""
        if self.args.dry_run:
            self.train("dcgan", "fp32", data_dirs["dcgan"], "torchrun", 2, tag="-torchrun2")
            return
        if self.info["gpus"] < 2:
            self.add("dist", "nccl", NOT_TESTED, launcher="torchrun x 2 (nccl)",
                     note=f"distributed path not tested: {self.info['gpus']} GPU(s), the 2-rank NCCL rows "
                          "and --sync_bn need 2")
            return
        for family in FAMILIES:
            self.train(family, "fp32", data_dirs[family], "torchrun", 2, tag="-nccl2")
        self.train("dcgan", "fp32", data_dirs["dcgan"], "torchrun", 2, tag="-nccl2-syncbn",
                   extra=("--sync_bn", "True"))

    def count_flops(self, data_dirs):
        spec = {}
        for family in FAMILIES:
            flag_file, extra = self.jobs[family]
            spec[family] = flag_file_argv(flag_file) + extra + ["--data_dir", data_dirs[family]]
        spec_path = os.path.join(self.work, "flops_spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        try:
            result = self.child("flops", "--child_spec", spec_path)
        except JobFailed as e:
            for family in FAMILIES:
                self.add("flops", family, "failed", family=family, precision="fp32", note=last_line(str(e)))
            return
        self.info = result["env"]
        for family in FAMILIES:
            r = result[family]
            if "error" in r:
                self.add("flops", family, "failed", family=family, precision="fp32", note=r["error"])
                continue
            self.flops[family] = r
            self.add("flops", family, "ok", family=family, precision="fp32",
                     **{"GFLOP/img": f"{r['flops_per_image'] / 1e9:.4g}"},
                     note=f"{r['flops_per_step'] / 1e9:.4g} GFLOP per step of batch {r['batch']} "
                          f"(mean of {r['steps_counted']} step(s), forward + backward)")

    def sample(self):
        run_dir = self.train_dirs.get(("ddgan", "fp32")) or next(
            (d for (f, _), d in self.train_dirs.items() if f == "ddgan"), None)
        cells = dict(family="ddgan", precision="fp32")
        if run_dir is None:
            self.add("sample", "ddgan", "failed", **cells, note="no ddgan training run finished")
            return None
        launcher, n = self.launcher()
        out = os.path.join(self.work, "sample-ddgan")
        # no flag file: the model flags come from the run's options.json (the dry run's are not the file's)
        cmd = ["bash", os.path.join(ROOT, "launch", "run.sh"), launcher, n, "ddgan.sample",
               "--model_path", run_dir, "--num_samples", self.args.num_samples, "--batch_size",
               self.args.sample_batch, "--logdir", out]
        cells["launcher"] = f"{launcher} x {n} ({self.backend(n, self.info['cuda'])})"
        begin, end = SAMPLING, WROTE
        try:
            seen, seconds = run_job(cmd, os.path.join(self.work, "sample-ddgan.log"), self.args.timeout, self.env,
                                    watch=[begin, end])
            t0, t1 = seen[begin.pattern][0][0], seen[end.pattern][-1][0]
            npz_path = end.search(seen[end.pattern][-1][1]).group(1)
        except (JobFailed, IndexError) as e:
            self.add("sample", "ddgan", "failed", **cells, note=last_line(str(e)) if str(e) else "no log lines")
            return None
        rate = self.args.num_samples / (t1 - t0)
        self.add("sample", "ddgan", "ok", **cells, **{"img/s": fmt(rate), "seconds": f"{seconds:.1f}"},
                 note=f"{self.args.num_samples} images from {os.path.basename(run_dir)}")
        return npz_path

    def fid(self, npz_path):
        cells = dict(precision="fp32", launcher="1 process")
        if npz_path is None:
            for job in ("evaluations", "pytorch-fid"):
                self.add("fid", job, "failed", **cells, note="no samples (the sample row failed)")
            return
        try:
            r = self.child("fid", "--child_npz", npz_path, "--fid_images", self.args.fid_images, "--dims",
                           self.args.dims, "--fid_batch", self.args.fid_batch, "--workers", self.args.workers,
                           "--inception_weights", self.args.inception_weights,
                           # a dry run is the same everywhere: random weights even where hub has the real ones
                           *(["--child_random_weights"] if self.args.dry_run else []))
        except JobFailed as e:
            for job in ("evaluations", "pytorch-fid"):
                self.add("fid", job, "failed", **cells, note=last_line(str(e)))
            return
        ratio = r["theirs_s"] / r["ours_s"]
        for job, seconds in (("evaluations", r["ours_s"]), ("pytorch-fid", r["theirs_s"])):
            self.add("fid", job, "ok", **cells, **{"img/s": fmt(r['images'] / seconds), "seconds": f"{seconds:.1f}"},
                     note=f"{r['images']} images, dims {self.args.dims}, {r['weights']}; max abs mu diff "
                          f"{r['mu_diff']:.2g}; evaluations/pytorch-fid speed {ratio:.2f}x")

    def run(self):
        began = time.perf_counter()
        if not self.args.dry_run:
            try:
                self.info = self.child("env")
            except JobFailed as e:
                self.add("env", "probe", "failed", note=last_line(str(e)))
                return time.perf_counter() - began
            if not self.info["cuda"]:
                self.add("env", "probe", "failed", note="torch sees no CUDA device: run with --dry_run on a CPU")
                return time.perf_counter() - began
        try:
            data_dirs = self.prepare_data()
        except (JobFailed, subprocess.CalledProcessError, ValueError) as e:
            self.add("data", "digits", "failed", note=last_line(str(e)))
            return time.perf_counter() - began
        self.count_flops(data_dirs)
        for family in FAMILIES:  # one process per row: the MFU is one GPU's
            for precision in PRECISIONS:
                self.train(family, precision, data_dirs[family], "local", 1)
        self.compiled(data_dirs)
        self.distributed(data_dirs)
        self.fid(self.sample())
        return time.perf_counter() - began

    def markdown(self, seconds):
        return markdown(self.args, self.info, self.rows, self.work, seconds)




def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(HERE, "gpu_check_results.md"), help="the results table (markdown)")
    p.add_argument("--dry_run", action="store_true", help="everything on the CPU at toy sizes (no GPU needed)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per training run (default 200; dry 4)")
    p.add_argument("--log_interval", type=int, default=None, help="steps per log row (default 40; dry 1)")
    p.add_argument("--num_samples", type=int, default=None, help="DDGAN samples (default 50000; dry 16)")
    p.add_argument("--sample_batch", type=int, default=None, help="sampling batch per process (default 500; dry 8)")
    p.add_argument("--fid_images", type=int, default=None, help="images for the FID rows (default 10000; dry 8)")
    p.add_argument("--fid_batch", type=int, default=None, help="Inception batch size (default 200; dry 4)")
    p.add_argument("--dims", type=int, default=None, choices=(64, 192, 768, 2048),
                   help="Inception feature block (default 2048; dry 64)")
    p.add_argument("--workers", type=int, default=None,
                   help="data loader workers for both FID tools (default 8; dry 0)")
    p.add_argument("--inception_weights", default="",
                   help="pytorch-fid weights file (default: torch hub's, else random)")
    p.add_argument("--data_dir", default="", help="training images for every family (default: the bundled digits)")
    p.add_argument("--workdir", default="", help="where runs and logs go (default: a new temporary folder)")
    p.add_argument("--timeout", type=int, default=None, help="seconds per job (default 300; dry 120)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--child_out", default="", help=argparse.SUPPRESS)
    p.add_argument("--child_spec", default="", help=argparse.SUPPRESS)
    p.add_argument("--child_npz", default="", help=argparse.SUPPRESS)
    p.add_argument("--child_random_weights", action="store_true", help=argparse.SUPPRESS)
    return p


DEFAULTS = {  # name: (GPU, --dry_run)
    "steps": (200, 4), "log_interval": (40, 1), "num_samples": (50000, 16), "sample_batch": (500, 8),
    "fid_images": (10000, 8), "fid_batch": (200, 4), "dims": (2048, 64), "workers": (8, 0), "timeout": (300, 120),
}


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    for name, (gpu, dry) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, dry if args.dry_run else gpu)
        elif getattr(args, name) < (0 if name == "workers" else 1):
            p.error(f"--{name} {getattr(args, name)}: must be {'0 or more' if name == 'workers' else 'positive'}")
    if args.steps < 2 * args.log_interval:
        p.error(f"--steps {args.steps} must be at least twice --log_interval {args.log_interval} (two log rows)")
    if args.data_dir and not os.path.isdir(args.data_dir):
        p.error(f"--data_dir {args.data_dir}: no such folder")
    if args.inception_weights and not os.path.isfile(args.inception_weights):
        p.error(f"--inception_weights {args.inception_weights}: no such file")
    if os.path.isdir(args.out):
        p.error(f"--out {args.out}: is a folder")
    for name in ("data_dir", "inception_weights", "workdir"):  # the jobs run in the repository
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))

    if args.child:
        result = run_child(args)
        write_atomic(args.child_out, json.dumps(result))
        return 0

    check = Check(args)
    seconds = check.run()
    write_atomic(args.out, check.markdown(seconds))
    failed = sum(r["status"] not in ("ok", NOT_TESTED) for r in check.rows)
    print(f"gpu_check: wrote {args.out} ({len(check.rows)} rows, {failed} failed, {seconds:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
