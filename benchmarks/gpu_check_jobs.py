"""The GPU check's jobs: how the driver (benchmarks/gpu_check.py) runs one and reads what it
measured (run_job, JobFailed, img_per_sec), and the measurements run in its child processes
(`gpu_check.py --child NAME`, dispatched by run_child): the environment probe, one training
step's FLOPs per family (counted on the Task its task.build_task makes) and the FID feature
extractors' speed. The measurements import torch inside their functions; the driver, which
imports this module, never does."""

import json
import os
import statistics
import time

from evaluations import stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def img_per_sec(rows, row_times):
    """From a run's progress.csv rows and the times their tables appeared on stdout."""
    rates = [float(r["img_per_sec"]) for r in rows[1:] if "img_per_sec" in r]
    if rates:
        return statistics.median(rates), "progress.csv img_per_sec (median)"
    if len(rows) < 2 or len(row_times) != len(rows):
        raise JobFailed(f"{len(rows)} log rows, {len(row_times)} tables on stdout: need 2 or more of each")
    images = float(rows[-1]["samples"]) - float(rows[0]["samples"])
    return images / (row_times[-1] - row_times[0]), "samples / time between log rows"


def run_child(args):
    """The measurement `gpu_check.py --child NAME` asked for (`args`: its parsed arguments), as
    the dict the driver reads back from --child_out."""
    if args.child == "env":
        return child_env_info()
    if args.child == "flops":
        with open(args.child_spec) as f:
            return child_flops(json.load(f))
    return child_fid(args.child_npz, args.fid_images, args.dims, args.fid_batch, args.workers,
                     args.inception_weights, os.path.dirname(args.child_out), args.child_random_weights)


def last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def child_env_info():
    import torch

    cuda = torch.cuda.is_available()
    return {"cuda": cuda, "gpus": torch.cuda.device_count() if cuda else 0,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__}


def _build_task(family, argv, device):
    """The family's Task built by its own task.build_task (what its train entry point calls) from
    `argv` (not a copy of it, so the flops row measures what a run trains), and its input shape."""
    from trainkit import data

    if family == "improved_diffusion":
        from improved_diffusion import task as family_task
        from improved_diffusion import train

        args = train.create_argparser().parse_args(argv)
        task = family_task.build_task(args, log=lambda *a: None)
        return task, (args.batch_size, args.image_channels, args.image_size, args.image_size), 1
    if family == "ddgan":
        from ddgan import task as family_task
        from ddgan import train

        args = train.create_parser().parse_args(argv)
        o = vars(args)
        # R1 runs every --lazy_reg steps: count that many steps and average
        return family_task.build_task(args), (o["batch_size"], o["num_channels"], o["image_size"], o["image_size"]), \
            o["lazy_reg"] or 1
    from gans import models, train
    from gans import task as family_task

    args = train.create_argparser().parse_args(argv)
    # the data set's real number of classes (a conditional model's label embedding)
    dataset = data.load_dataset(args.data_dir, args.image_size, class_cond=args.model in models.CONDITIONAL,
                                channels=args.num_channels)
    task = family_task.build_task(args, dataset)
    return task, (args.batch_size, args.num_channels, args.image_size, args.image_size), 1


class _GlobalOnly:
    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def child_flops(spec):
    """FLOPs of one training step per family: {family: {...}} (an entry `error` where it failed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainkit import dist

    device = dist.device()
    out = {"env": child_env_info()}
    for family, argv in spec.items():
        try:
            torch.manual_seed(0)
            task, shape, steps = _build_task(family, argv, device)
            x = torch.rand(*shape, device=device) * 2 - 1
            task.step((x, None), 0, 0)  # warm-up: lazy state, cuDNN, allocator
            counter = FlopCounterMode(display=False)
            # Only the total is wanted: the per-module breakdown's tracker hooks backward passes
            # in a way autograd.grad refuses (DDGAN's R1 penalty), so it is swapped for a
            # stand-in that files every count under "Global", the key the total is read from.
            counter.mod_tracker = _GlobalOnly()
            with counter:
                for i in range(1, steps + 1):
                    task.step((x, None), i, 0)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            flops = counter.get_total_flops() / steps
            out[family] = {"flops_per_step": flops, "batch": shape[0], "flops_per_image": flops / shape[0],
                           "steps_counted": steps}
            del task, x  # the next family gets the GPU's memory
            if device.type == "cuda":
                torch.cuda.empty_cache()
        except Exception as e:  # one family's failure is its row, not the others'
            out[family] = {"error": f"{type(e).__name__}: {last_line(str(e)) if str(e) else ''}"}
    return out


def child_fid(npz_path, num_images, dims, batch_size, workers, weights, work, random_weights=False):
    """Feature extraction of the same PNGs by evaluations.fid and by pytorch-fid, timed."""
    import numpy as np
    import torch
    from PIL import Image
    from pytorch_fid import fid_score
    from pytorch_fid import inception as pfi

    from evaluations import fid, inception
    from trainkit import dist, npz

    images, _ = npz.read_samples(npz_path)
    images = images[:num_images]
    folder = os.path.join(work, "fid_images")
    os.makedirs(folder, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im).save(os.path.join(folder, f"{i:06d}.png"))
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    note = "given weights"
    if not weights:
        weights = inception.default_weights_path()
        note = "torch hub's weights"
        if random_weights or not os.path.isfile(weights):
            weights = inception.make_random_weights(os.path.join(work, "random_inception.pth"), seed=0,
                                                    calibration_batches=1, batch_size=2)
            note = "random weights (speed only)"
    # pytorch-fid loads its weights through torch hub only: a TORCH_HOME holding the same file
    hub = os.path.join(work, "torch_home", "hub", "checkpoints")
    os.makedirs(hub, exist_ok=True)
    link = os.path.join(hub, inception.WEIGHTS_NAME)
    if not os.path.exists(link):
        os.symlink(os.path.abspath(weights), link)
    os.environ["TORCH_HOME"] = os.path.join(work, "torch_home")
    torch.hub.set_dir(os.path.join(work, "torch_home", "hub"))
    device = dist.device()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    ours_model = fid.FeatureModel(dims, weights, device)
    theirs = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).to(device).eval()
    with torch.no_grad():  # warm-up of both networks (cuDNN's algorithm search) outside the timing
        warm = torch.rand(min(batch_size, 4), 3, 64, 64, device=device)
        ours_model.get()(warm)
        theirs(warm)
    sync()
    began = time.perf_counter()
    mu_ours, _ = fid.statistics_of_path(folder, ours_model, batch_size, workers)
    sync()
    ours_s = time.perf_counter() - began
    began = time.perf_counter()
    mu_theirs, _ = fid_score.calculate_activation_statistics(files, theirs, batch_size, dims, device, workers)
    sync()
    theirs_s = time.perf_counter() - began
    return {"images": len(files), "ours_s": ours_s, "theirs_s": theirs_s, "weights": note,
            "mu_diff": float(np.max(np.abs(np.asarray(mu_ours) - np.asarray(mu_theirs))))}
