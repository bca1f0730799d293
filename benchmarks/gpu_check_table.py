"""The GPU check's results table: its columns, the peak FLOP/s its MFU divides by, how its numbers
are written, the markdown page, and the page's atomic write (temp file + os.replace).

One row per job:

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
"""

import os
import tempfile

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


def fmt(x):
    """Four significant digits, never in e-notation above 1000 (img/s of a fast GAN)."""
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"


NOT_TESTED = "not tested"  # a row's status for a path this node cannot run (not a failure)


def markdown(a, info, rows, work, seconds):
    """The results page: a header (mode, device, total time, the peak table used for MFU) and one
    table row per job in COLUMNS' order (`a`: the parsed arguments; `rows`: dicts keyed by COLUMNS)."""
    mode = "--dry_run (CPU, toy sizes)" if a.dry_run else "GPU"
    device = info["device"] if info["cuda"] else f"cpu ({cpu_model()}, {os.cpu_count()} cores)"
    lines = [
        "# GPU check results",
        "",
        f"- mode: {mode}; {a.steps} steps per training run, log row every {a.log_interval}",
        f"- device: {device}; GPUs: {info['gpus']}; torch {info['torch']}",
        f"- total: {seconds:.0f} s; work folder (logs, runs): {work}",
        *([f"- distributed path not tested ({info['gpus']} GPU)"]
          if any(r["status"] == NOT_TESTED for r in rows) else []),
        f"- peak TFLOP/s used for MFU (dense; {FP32_CONVENTION}): " + "; ".join(
            f"{k} " + "/".join(f"{v[p]:g}" for p in ("bf16", "fp16", "fp32")) for k, v in PEAK_TFLOPS)
        + " (bf16/fp16/fp32); any other device: n/a",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
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
