"""Training throughput of a family's trainer: eager beside --compile, or improved_diffusion beside openai's.

    python benchmarks/train_throughput.py [--family improved_diffusion|ddgan|gans] [--compile]
        [--flags "MORE TRAIN FLAGS"] [--reference PATH/TO/openai-improved-diffusion]
        [--steps 5] [--warmup 2] [--batch_size 32] [--precision fp32] [--reference_precision P]
        [--rounds 1] [--profile]

Every Task is built by the family's own task.build_task (what its train.py calls) from its train
flags: the family's FAMILY_FLAGS below, then --flags, then --batch_size and --precision. --compile adds a
child with `--compile True` beside the eager one and prints compiled/eager img/s (its warm-up
steps absorb the compilation; give it --warmup 3 or more: R1 and non-R1 steps compile apart).

Config (the issue's): 32 px, 64 channels, 2 res blocks, attention at 16 and 8, learn_sigma,
cosine schedule, 4000 steps, hybrid loss, batch 32, one process. Each implementation runs in
its own child process (so its peak RSS is its own) on the same synthetic batches, through
its real training step: loss, backward, AdamW, EMA, loss logging. Children alternate for
--rounds rounds so that a machine whose load drifts hurts both alike. Printed: img/s from the
median step time after warm-up, peak RSS, and ours/openai ratios.

`--precision` is ours; the reference runs `--reference_precision` (default: the same, or
fp32 when ours is bf16, which openai's code does not have; on a GPU compare bf16 with its
fp16). `--profile` adds one profiled step per child and prints the share of its CPU time spent
in convolution kernels (forward and backward): both implementations call the same oneDNN
convolutions, so 1 / (openai's share) bounds the speed-up any rewrite of the rest can give.

The reference is imported from PATH as it is (never edited). It needs mpi4py; the one runtime
shim it needs on NumPy >= 1.24 (np.int, used by its loss-aware sampler) is applied here at
import time.
"""

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CONFIG = dict(image_size=32, num_channels=64, num_res_blocks=2, attention_resolutions="16,8", learn_sigma=True,
              noise_schedule="cosine", diffusion_steps=4000)
# the families' train flags (then --flags): the U-Net; DDGAN and DCGAN at CIFAR-10's 32 px
FAMILY_FLAGS = {
    "improved_diffusion": [f"--{k}={v}" for k, v in CONFIG.items()] + ["--use_kl", "False", "--data_dir", "-"],
    "ddgan": ["--dataset", "cifar10", "--image_size", "32", "--num_channels", "3", "--num_channels_dae", "64",
              "--ch_mult", "1", "2", "2", "--num_res_blocks", "2", "--nz", "100", "--num_timesteps", "4",
              "--lazy_reg", "15", "--r1_gamma", "0.02", "--use_ema"],
    "gans": ["--model", "dcgan", "--image_size", "32", "--num_channels", "3", "--data_dir", "-"],
}


def synthetic_batches(batch_size, n, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch_size, 3, 32, 32, generator=g) * 2 - 1 for _ in range(n)]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def time_steps(step_fn, batches, warmup, profile=False):
    """Step times after `warmup`; with `profile`, also the share of one more (profiled) step's
    CPU time that went to convolution kernels."""
    times = []
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        step_fn(batch)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if not profile:
        return times, None
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step_fn(batches[-1])
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    return times, conv / total


def build_task(args, compile_):
    """(task, image shape, parameters) of args.family, built by its family's task.build_task."""
    import shlex

    import torch

    from trainkit import data

    argv = FAMILY_FLAGS[args.family] + shlex.split(args.flags) + [
        "--batch_size", str(args.batch_size), "--precision", args.precision, "--compile", str(compile_)]
    if args.family == "improved_diffusion":
        from improved_diffusion import task as family
        from improved_diffusion import train

        a = train.create_argparser().parse_args(argv)
        task = family.build_task(a, log=lambda *x: None)
        return task, (a.image_channels, a.image_size, a.image_size), task.model
    if args.family == "ddgan":
        from ddgan import task as family
        from ddgan import train

        a = train.create_parser().parse_args(argv)
        task = family.build_task(a)
        return task, (a.num_channels, a.image_size, a.image_size), task.g_raw
    from gans import models, train
    from gans import task as family

    a = train.create_argparser().parse_args(argv)
    images = torch.zeros(a.batch_size, a.num_channels, a.image_size, a.image_size, dtype=torch.uint8)
    # a conditional model gets the digits' 10 classes (its label embedding is part of what is timed)
    conditional = a.model in models.CONDITIONAL
    labels = torch.arange(a.batch_size) % 10 if conditional else None
    dataset = data.ImageData(images, labels, "synthetic", classes=[str(c) for c in range(10)] if conditional else None)
    task = family.build_task(a, dataset)
    return task, (a.num_channels, a.image_size, a.image_size), task.G


def child_ours(args, compile_=False):
    sys.path.insert(0, ROOT)
    import torch

    from trainkit import dist, loop

    dist.init()
    torch.manual_seed(0)
    task, shape, model = build_task(args, compile_)
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(args.batch_size, *shape, generator=g) * 2 - 1 for _ in range(args.warmup + args.steps)]
    stats = loop.StepStats()  # what trainkit.loop does with a step's statistics, included in the time

    def one_step(b, counter=iter(range(10**9))):
        i = next(counter)
        stats.add(task.step((b, None), i, 0), i + 1)

    times, conv_share = time_steps(one_step, batches, args.warmup, args.profile)
    return times, conv_share, sum(p.numel() for p in model.parameters())


def child_openai(args):
    import numpy as np

    if not hasattr(np, "int"):  # removed in NumPy 1.24; the reference's resample.py uses it
        np.int = int
    sys.path.insert(0, os.path.abspath(args.reference))
    import torch
    import torch.distributed as td

    if not td.is_initialized():  # one process: a gloo group, as its dist_util would make
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    from improved_diffusion import logger
    from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults
    from improved_diffusion.train_util import TrainLoop

    logger.configure(dir=tempfile.mkdtemp(prefix="bench-openai-"), format_strs=[])
    torch.manual_seed(0)
    kw = model_and_diffusion_defaults()
    kw.update(CONFIG)
    model, diffusion = create_model_and_diffusion(**kw)
    use_fp16 = args.reference_precision == "fp16"
    loop = TrainLoop(model=model, diffusion=diffusion, data=iter(()), batch_size=args.batch_size, microbatch=-1,
                     lr=1e-4, ema_rate="0.9999", log_interval=10**9, save_interval=10**9, resume_checkpoint="",
                     use_fp16=use_fp16)
    batches = synthetic_batches(args.batch_size, args.warmup + args.steps)
    times, conv_share = time_steps(lambda b: loop.run_step(b, {}), batches, args.warmup, args.profile)
    return times, conv_share, sum(p.numel() for p in model.parameters())


def run_child(impl, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch_size", str(args.batch_size), "--precision", args.precision,
           "--family", args.family, "--flags", args.flags]
    if args.reference:
        cmd += ["--reference", args.reference, "--reference_precision", args.reference_precision]
    if args.profile:
        cmd.append("--profile")
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"train_throughput: error: the {impl} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default="", help="checkout of openai/improved-diffusion to compare with")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--reference_precision", default="", choices=["", "fp32", "fp16"],
                   help="the reference's precision (default: --precision, or fp32 when that is bf16)")
    p.add_argument("--rounds", type=int, default=1, help="alternate the implementations this many times")
    p.add_argument("--profile", action="store_true", help="print the share of a step spent in convolutions")
    p.add_argument("--family", default="improved_diffusion", choices=sorted(FAMILY_FLAGS))
    p.add_argument("--flags", default="", help="more train flags of the family (a quoted string)")
    p.add_argument("--compile", action="store_true", help="also time the family with --compile True")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reference and args.family != "improved_diffusion":
        p.error(f"--reference: openai's trainer is improved_diffusion's, not --family {args.family}")
    if args.reference and not os.path.isfile(os.path.join(args.reference, "improved_diffusion", "train_util.py")):
        p.error(f"--reference {args.reference}: not a checkout of openai/improved-diffusion "
                "(no improved_diffusion/train_util.py)")
    if not args.reference_precision:
        args.reference_precision = "fp32" if args.precision == "bf16" else args.precision

    if args.child:
        if args.child == "openai":
            times, conv_share, params = child_openai(args)
        else:
            times, conv_share, params = child_ours(args, compile_=args.child == "compiled")
        print(json.dumps({"times": times, "conv_share": conv_share, "params": params, "peak_rss_mb": peak_rss_mb()}))
        return

    import torch

    impls = ["ours"] + (["compiled"] if args.compile else []) + (["openai"] if args.reference else [])
    precision = {"ours": args.precision, "compiled": args.precision, "openai": args.reference_precision}
    results = {impl: {"times": [], "conv_share": [], "peak_rss_mb": 0.0, "params": 0} for impl in impls}
    for _ in range(args.rounds):
        for impl in impls:
            r = run_child(impl, args)
            results[impl]["times"] += r["times"]
            if r["conv_share"] is not None:
                results[impl]["conv_share"].append(r["conv_share"])
            results[impl]["peak_rss_mb"] = max(results[impl]["peak_rss_mb"], r["peak_rss_mb"])
            results[impl]["params"] = r["params"]
    print(f"family {args.family}: {' '.join(FAMILY_FLAGS[args.family])} {args.flags}, batch {args.batch_size}, "
          f"{os.environ.get('OMP_NUM_THREADS') or torch.get_num_threads()} threads, "
          f"{args.rounds} round(s) x {args.steps} timed steps")
    for impl, r in results.items():
        med = statistics.median(r["times"])
        r["img_per_s"] = args.batch_size / med
        conv = (f"  convolutions {statistics.median(r['conv_share']):.0%} of a step" if r["conv_share"] else "")
        print(f"{impl:8s} {precision[impl]}  params {r['params']:,}  step {med:.3f} s (median; "
              f"min {min(r['times']):.3f})  {r['img_per_s']:.2f} img/s  peak RSS {r['peak_rss_mb']:.0f} MB{conv}")
    if "compiled" in results:
        print(f"ratio compiled/eager: {results['compiled']['img_per_s'] / results['ours']['img_per_s']:.2f}x img/s "
              f"(eager {results['ours']['img_per_s']:.2f}, compiled {results['compiled']['img_per_s']:.2f} img/s)")
    if "openai" in results:
        o, b = results["ours"], results["openai"]
        print(f"ratio ours/openai: {o['img_per_s'] / b['img_per_s']:.2f}x img/s, "
              f"{o['peak_rss_mb'] / b['peak_rss_mb']:.2f}x peak RSS")
        if b["conv_share"] and precision["ours"] == precision["openai"]:
            print(f"bound with the same convolution kernels: {1 / statistics.median(b['conv_share']):.2f}x "
                  "(openai's step time over its convolution time)")

if __name__ == "__main__":
    main()
