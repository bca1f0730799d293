"""The GPU check: one command that trains, samples and measures every family on the GPUs of one node.

    bash benchmarks/gpu_check.sh [--out benchmarks/gpu_check_results.md] [--steps 200]
                                 [--data_dir DIR] [--inception_weights PATH] [--dry_run]

Writes one markdown table (atomically: temp file + os.replace) with one row per job:

- train: every family (improved_diffusion, ddgan, gans' dcgan) x every precision (fp32, fp16,
  bf16) on its CIFAR-10 flag file, started as a real run of its train entry point through
  launch/run.sh torchrun with one process per local GPU (trainkit.dist picks nccl when CUDA is
  available, gloo otherwise). img/s: the median of progress.csv's `img_per_sec` column when the
  run logs one, else the growth of its `samples` column between the first and the last log row
  over the time between those rows' tables appearing on the run's stdout (the first row's steps,
  with start-up and warm-up, are left out either way). Each row runs eager (compile
  no); one --compile row per family in bf16 (a dry run: DCGAN only) makes the compile column yes.
- dist: on 2+ GPUs a 2-rank NCCL row per family and a --sync_bn DCGAN row; on one GPU a row
  (status "not tested", not a failure) and a header line: distributed path not tested.
- flops: one training step of each family's Task (forward and backward of every network, R1
  and d_steps included, averaged over --lazy_reg steps for DDGAN) counted by
  torch.utils.flop_counter.FlopCounterMode at the training flags. A train row's MFU is
  FLOPs per image x img/s / (the GPU's peak for that precision x GPUs); unknown GPU: n/a.
- sample: ddgan.sample of 50,000 images from the fp32 DDGAN run; img/s between the sampler's
  "sampling N images" and "wrote" log lines.
- fid: Inception feature extraction of the same sampled images (written as PNGs) by
  evaluations.fid and by pytorch-fid's own InceptionV3 / calculate_activation_statistics, from
  the same weights: --inception_weights, else torch hub's cached file, else random weights
  (evaluations.inception.make_random_weights; the speed does not depend on the values, and the
  node needs no network). The note gives the largest difference of the two feature means.

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
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # run as a script: the repository's packages (none of these imports torch)
sys.path.insert(0, HERE)  # loaded from its path (the tests): its child jobs beside it
from gpu_check_jobs import _build_task, child_env_info, child_fid, child_flops, last_line  # noqa: E402, F401 (path, re-export)

from evaluations import stages  # noqa: E402 (path)
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

# Dense peak TFLOP/s per GPU (no sparsity: half the data sheets' starred figures). H100 SXM and
# H200 (SXM): 989.4 bf16/fp16, 494.7 TF32 (NVIDIA's Hopper whitepaper); H100 PCIe 756 / 378;
# H100 NVL and H200 NVL 835.5 / 417.5 (data sheets: 1,671 / 835 with sparsity). The device
# names: "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200",
# "NVIDIA H200 NVL"; matched in this order, the specific names first.
# The fp32 column is TF32's dense tensor-core peak: cuDNN runs fp32 convolutions (most of these
# models' FLOPs) on TF32 by default (torch.backends.cudnn.allow_tf32 = True), while fp32
# matmuls stay IEEE fp32 (torch.backends.cuda.matmul.allow_tf32 = False, whose ceiling is the
# 67 TFLOP/s of the SXM's CUDA cores): an fp32 row's MFU is against the convolutions' ceiling.
PEAK_TFLOPS = (
    ("H200 NVL", {"bf16": 835.5, "fp16": 835.5, "fp32": 417.5}),
    ("H200", {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7}),
    ("H100 NVL", {"bf16": 835.5, "fp16": 835.5, "fp32": 417.5}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0}),
)
FP32_CONVENTION = ("fp32 = TF32 dense tensor-core peak (cuDNN convolutions use TF32 by default; fp32 matmuls "
                   "do not: torch.backends.cuda.matmul.allow_tf32 is False)")

COLUMNS = ("section", "job", "family", "precision", "compile", "launcher", "status", "img/s", "GFLOP/img",
           "TFLOP/s", "MFU", "seconds", "note")
# Unanchored, in case a launcher prefixes its workers' lines with their rank.
STEP_ROW = re.compile(r"\|\s*step\s*\|")  # trainkit.logger's table: one `| step | N |` line per log row
SAMPLING = re.compile(r"sampling \d+ images from")  # ddgan.sample's log lines around the sampling
WROTE = re.compile(r"\bwrote (\S+\.npz)")


def peak_tflops(device_name, precision):
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peaks[precision]
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def python():
    # the interpreter launch/run.sh uses, so a job and its children run on the same one
    return os.environ.get("PYTHON") or sys.executable


def fmt(x):
    """Four significant digits, never in e-notation above 1000 (img/s of a fast GAN)."""
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"


NOT_TESTED = "not tested"  # a row's status for a path this node cannot run (not a failure)


class JobFailed(Exception):
    pass


def run_job(cmd, log_path, timeout, env, watch=()):
    """Run `cmd` with its stdout and stderr into `log_path` through the main job's runner
    (evaluations.stages: a session of its own; past `timeout` seconds, silent or not, stopped by
    its one stop policy, launcher included). Returns (per `watch` regex the (time, line) of each
    matching stdout line, seconds); JobFailed(last line) on a non-zero exit or a timeout."""
    result = stages.run(cmd, log_path, env=env, cwd=ROOT, timeout=timeout, watch=watch)
    if result.timed_out:
        raise JobFailed(f"timed out after {timeout} s (log: {log_path})")
    if result.code != 0:
        with open(log_path) as f:
            raise JobFailed(f"exit {result.code}: {last_line(f.read())}")
    return result.seen, result.seconds


def read_progress(run_dir):
    """A run's progress.csv rows (trainkit's one reader: numbers as floats, blank cells left out)."""
    return progress_file.read_progress(run_dir)


def img_per_sec(rows, row_times):
    """From a run's progress.csv rows and the times their tables appeared on stdout."""
    rates = [float(r["img_per_sec"]) for r in rows[1:] if "img_per_sec" in r]
    if rates:
        return statistics.median(rates), "progress.csv img_per_sec (median)"
    if len(rows) < 2 or len(row_times) != len(rows):
        raise JobFailed(f"{len(rows)} log rows, {len(row_times)} tables on stdout: need 2 or more of each")
    images = float(rows[-1]["samples"]) - float(rows[0]["samples"])
    return images / (row_times[-1] - row_times[0]), "samples / time between log rows"


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
        a = self.args
        mode = "--dry_run (CPU, toy sizes)" if a.dry_run else "GPU"
        device = self.info["device"] if self.info["cuda"] else f"cpu ({cpu_model()}, {os.cpu_count()} cores)"
        lines = [
            "# GPU check results",
            "",
            f"- mode: {mode}; {a.steps} steps per training run, log row every {a.log_interval}",
            f"- device: {device}; GPUs: {self.info['gpus']}; torch {self.info['torch']}",
            f"- total: {seconds:.0f} s; work folder (logs, runs): {self.work}",
            *([f"- distributed path not tested ({self.info['gpus']} GPU)"]
              if any(r["status"] == NOT_TESTED for r in self.rows) else []),
            f"- peak TFLOP/s used for MFU (dense; {FP32_CONVENTION}): " + "; ".join(
                f"{k} " + "/".join(f"{v[p]:g}" for p in ("bf16", "fp16", "fp32")) for k, v in PEAK_TFLOPS)
            + " (bf16/fp16/fp32); any other device: n/a",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(row[c].replace("|", "/").replace("\n", " ") for c in COLUMNS) + " |")
        return "\n".join(lines) + "\n"


def write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
        if args.child == "env":
            result = child_env_info()
        elif args.child == "flops":
            with open(args.child_spec) as f:
                result = child_flops(json.load(f))
        else:
            result = child_fid(args.child_npz, args.fid_images, args.dims, args.fid_batch, args.workers,
                               args.inception_weights, os.path.dirname(args.child_out), args.child_random_weights)
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
