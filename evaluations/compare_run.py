"""One run of the main job's config: its stages and their measurements. A one-step baseline
(the untrained network), the training (stopped by its share of the budget through
$TRAINKIT_DEADLINE), each sampler on the same seeds, a post-hoc EMA sweep when the config asks,
and the control stages its flag file asks for (INTERPOLATE_FLAGS, EDIT_FLAGS: the entry points
`<package>.interpolate` / `<package>.edit`). It knows no family: what a sampler did (its network
evaluations per image) is read from the samples' info file (trainkit.npz.read_sample_info), a
training's loss keys from its options.json."""

import glob
import json
import os
import shlex
import shutil
import sys
import time

import torch

from trainkit import checkpoint, npz
from trainkit.errors import UserError

from .compare_config import control_stages, drop_flag, guidance_scale, posthoc_label
from .judging import Judging, judge
from .stages import Stage, run_sh

# --- measurements -----------------------------------------------------------------------

def read_options(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "options.json")) as f:
        return json.load(f)


def read_quality(run_dir: str) -> list:
    """The rows of the run's quality probe (trainkit.loop.QUALITY_FILE), or [] without one."""
    from trainkit import loop, progress_file

    path = os.path.join(run_dir, loop.QUALITY_FILE)
    return progress_file.read_progress(path) if os.path.isfile(path) else []


def parameter_count(ck) -> int:
    """Learned parameters in the checkpoint's model file (BatchNorm statistics excluded)."""
    sd = ck.load("model")
    skip = ("running_mean", "running_var", "num_batches_tracked")
    total = 0
    for k, v in sd.items():
        if torch.is_tensor(v) and v.is_floating_point() and not k.endswith(skip):
            total += v.numel()
    return total



def network_evaluations(npz_path: str):
    """Forward passes of the sampling network per image, as the sampler recorded them beside its
    samples (trainkit.npz's info file), or None when it recorded none ("unknown" in the report)."""
    info = npz.read_sample_info(npz_path)
    value = (info or {}).get("network_evaluations")
    return int(value) if value is not None else None


def find_samples(directory: str) -> str:
    """The stage's npz: in its directory, or, when the stage ran again over an earlier run's
    files, in the fresh samples-<time> subfolder the sampler wrote instead (trainkit.run)."""
    for d in [directory] + sorted(glob.glob(os.path.join(directory, "samples-*")), reverse=True):
        found = sorted(n for n in os.listdir(d) if n.startswith("samples_") and n.endswith(".npz"))
        if found:
            return os.path.join(d, found[-1])
    raise UserError(f"{directory}: the sampler wrote no samples_*.npz")




def planned_stages(entry, baseline=True, control=True) -> int:
    """The jobs compare_run starts for `entry` when none fails: the progress display's total."""
    # a post-hoc sweep: the reconstruction, one sampling per σ_rel and the best one's full sampling
    sweep = 2 + len(entry["posthoc"]["sigma_rels"]) if entry.get("posthoc") else 0
    return ((2 if baseline else 0) + 1 + len(entry["samplers"]) + sweep
            + (len(control_stages(entry["flag_file"])) if control else 0))


def compare_run(entry, config, out, launcher, train_seconds, reuse, data_train, baseline=True, control=True,
                judging=None, progress=None) -> dict:
    name, package = entry["name"], entry["package"]
    nproc, n, batch = config["nproc"], config["num_samples"], config["sample_batch"]
    base = os.path.join(out, name)
    result = {"name": name, "package": package, "flag_file": entry["flag_file"], "dir": base, "rows": [], "failed": []}
    common_train = ["--data_dir", data_train, *entry["train_flags"]]

    def train(stage_dir, deadline_seconds, *extra):
        # The deadline is set when the stage starts, so waiting in line costs no training time.
        deadline = {"TRAINKIT_DEADLINE": str(time.time() + deadline_seconds)}
        argv = run_sh(launcher, nproc, entry["flag_file"], f"{package}.train", *common_train, *extra,
                      "--logdir", stage_dir)
        return Stage(stage_dir, argv, deadline, watch_csv=os.path.join(stage_dir, "progress.csv")).run(reuse, progress)

    def sample(model_dir, stage_dir, flags, count=None):
        argv = run_sh(launcher, nproc, entry["flag_file"], f"{package}.sample", "--model_path", model_dir,
                      "--num_samples", count or n, "--batch_size", batch, "--seed", 0, "--logdir", stage_dir, *flags)
        return Stage(stage_dir, argv, watch_samples=True).run(reuse, progress)

    # A baseline trained for one step: what "untrained" scores. It is sampled last, with the
    # run's cheapest sampler by the network evaluations its trained rows recorded: the point is
    # how far training moved the network, and a 100-step diffusion sampler would spend minutes of
    # the budget on noise.
    untrained_dir = os.path.join(base, "untrained")
    untrained = train(untrained_dir, 0) if baseline else {"ok": False, "skipped": True}
    if not untrained["ok"] and not untrained.get("skipped"):
        result["failed"].append(("untrained", untrained))
    train_dir = os.path.join(base, "train")
    if sampled(entry, config, base, train_dir, train_seconds, reuse, data_train, control, judging, progress, train,
               sample, result):
        options = read_options(train_dir)  # what the Task declared (trainkit.loop writes them)
        result.update(loss_keys=options.get("loss_keys"), discriminator_keys=options.get("discriminator_keys"))
    if untrained["ok"]:  # (not after an interruption: no stage starts once the user said stop)
        judge_untrained(entry, base, untrained_dir, judging, sample, result)
    return result


def judge_untrained(entry, base, untrained_dir, judging, sample, result):
    """Sample the one-step baseline with the cheapest sampler (the fewest network evaluations its
    trained rows recorded; the first sampler when none did) and give every row its FD."""
    by_label = {s["label"]: s for s in entry["samplers"]}  # (a post-hoc row's label names no sampler)
    known = [row for row in result["rows"] if row.get("nfe") is not None and row["sampler"] in by_label]
    cheapest = by_label[min(known, key=lambda row: row["nfe"])["sampler"]] if known else entry["samplers"][0]
    stage_dir = os.path.join(base, "untrained-samples")
    srec = sample(untrained_dir, stage_dir, cheapest["flags"])
    if not srec["ok"]:
        result["failed"].append(("untrained samples", srec))
        return
    found = find_samples(stage_dir)
    result["untrained"] = judge(found, judging=judging)
    result["baseline_nfe"] = network_evaluations(found)
    for row in result["rows"]:
        row.update(fd_untrained=result["untrained"]["fd_digits"], untrained_sampler=cheapest["label"])


def sampled(entry, config, base, train_dir, train_seconds, reuse, data_train, control, judging, progress, train,
            sample, result) -> bool:
    """The training stage, then every sampler's rows (and the post-hoc sweep's, and the control
    stages) into `result`; False when the training gave nothing to sample."""
    n = config["num_samples"]
    # quality over training: the probe's FD at evenly spaced points of the training's share
    probe_flags = (judging or Judging()).probe_flags(config.get("probe_points", 0), config.get("probe_samples", 200))
    rec = train(train_dir, train_seconds, *probe_flags)
    result["train"] = rec
    if not rec["ok"]:
        result["failed"].append(("train", rec))
        return False
    options = read_options(train_dir)
    ck = checkpoint.latest(train_dir)
    if ck is None:
        result["failed"].append(("train", {"error": f"{train_dir}: no complete checkpoint"}))
        return False
    world = options.get("_run", {}).get("world_size", config["nproc"])
    result.update(
        steps=ck.step,
        train_seconds=rec["seconds"],
        train_img_per_s=ck.step * int(options.get("batch_size", 0)) * world / max(rec["seconds"], 1e-9),
        parameters=parameter_count(ck),
        progress=os.path.join(train_dir, "progress.csv"),
        quality=read_quality(train_dir),
    )
    guidance_flag = config.get("guidance_flag", "--guidance_scale")
    # (sampler, row label, model folder, post-hoc σ_rel or None): the training's recorded sampling
    # weights for every sampler, then the post-hoc sweep's best average for its sampler
    samplers = [(sampler, sampler["label"], train_dir, None) for sampler in entry["samplers"]]
    if entry.get("posthoc"):
        chosen = posthoc_sweep(entry, train_dir, base, reuse, judging, sample, result, n, progress)
        if chosen is not None:
            sampler = next(s for s in entry["samplers"] if s["label"] == entry["posthoc"]["sampler"])
            samplers.append((sampler, posthoc_label(chosen[0], sampler["label"]), chosen[1], chosen[0]))
    for sampler, label, model_dir, sigma_rel in samplers:
        stage_dir = os.path.join(base, f"samples-{label}")
        srec = sample(model_dir, stage_dir, sampler["flags"])
        row = {"sampler": label, "dir": stage_dir, "fd_untrained": None, "untrained_sampler": None, "nfe": None}
        scale = guidance_scale(sampler["flags"], guidance_flag)
        if scale is not None:
            row["guidance_scale"] = scale
            # rows that differ in the scale only (same weights, same other flags) are one curve
            row["guidance_curve"] = (f"σ_rel {sigma_rel:g} " if sigma_rel is not None else "") + shlex.join(
                drop_flag(sampler["flags"], guidance_flag))
        if sigma_rel is not None:
            row["sigma_rel"] = sigma_rel
        if srec["ok"]:
            row["npz"] = find_samples(stage_dir)
            row["nfe"] = network_evaluations(row["npz"])
            row.update(judge(row["npz"], judging=judging))
            row["sample_seconds"] = srec["seconds"]
            row["sample_s_per_image"] = srec["seconds"] / row["num_samples"]
        else:
            row["error"] = srec.get("error")
            row["log"] = srec.get("log")
            result["failed"].append((f"samples {sampler['label']}", srec))
        result["rows"].append(row)
    if control:
        result["control"] = controllability(entry, train_dir, base, data_train, reuse, result["failed"],
                                            config.get("control_flags", {}), progress)
    return True


def posthoc_sweep(entry, train_dir, base, reuse, judging, sample, result, n, progress=None):
    """The post-hoc EMA sweep of `entry["posthoc"]`: reconstruct each σ_rel from the training's
    snapshots, sample `samples` images of each (at most `n`, the full sampling's count) with the
    sweep's sampler (same seeds), judge them and return (best σ_rel by FD, its checkpoint
    folder), or None when the sweep could not run (a training too short for a snapshot: said in
    result["posthoc"]["note"]; a failed stage: result["failed"]). result["posthoc"] keeps every
    σ_rel's figures for the report."""
    spec = entry["posthoc"]
    sweep = {"sampler": spec["sampler"], "samples": spec["samples"], "rows": []}
    result["posthoc"] = sweep
    from trainkit import phema, posthoc_ema

    snapshots = posthoc_ema.snapshot_steps(train_dir)
    stages = 2 + len(spec["sigma_rels"])
    if not snapshots:
        sweep["note"] = ("no post-hoc EMA sweep: the training wrote no power-function EMA snapshot (it stopped before "
                         "its first --ema_snapshot_interval, or was not trained with --ema_std)")
        if progress:
            progress.skip_to(progress.done + stages, entry["name"], "post-hoc sweep skipped: no snapshot")
        return None
    stage_dir = os.path.join(base, "posthoc_ema")
    folders = os.path.join(stage_dir, "averages")
    argv = [sys.executable, "-m", "trainkit.posthoc_ema", train_dir, "--out", folders,
            "--sigma_rel", ",".join(f"{v:g}" for v in spec["sigma_rels"])]
    stage = Stage(stage_dir, argv)
    if not (reuse and stage.done_before()) and os.path.isdir(folders):
        shutil.rmtree(folders)  # reconstructed again: its folders are written whole, never over old ones
    rec = stage.run(reuse, progress)
    if not rec["ok"]:
        result["failed"].append(("post-hoc EMA", rec))
        if progress:
            progress.skip_to(progress.done + stages - 1, entry["name"], "post-hoc sweep skipped")
        return None
    flags = next(s for s in entry["samplers"] if s["label"] == spec["sampler"])["flags"]
    count = min(spec["samples"], n)  # never more than the full sampling draws (a smoke run's few)
    sweep["samples"] = count
    for sigma in spec["sigma_rels"]:
        folder = os.path.join(folders, f"sigma_rel_{phema.std_name(sigma)}")  # as trainkit.posthoc_ema names it
        sdir = os.path.join(stage_dir, f"samples-{sigma:g}")
        srec = sample(folder, sdir, flags, count)
        if not srec["ok"]:
            result["failed"].append((f"post-hoc σ_rel {sigma:g} samples", srec))
            continue
        m = judge(find_samples(sdir), judging=judging)
        sweep["rows"].append({"sigma_rel": sigma, "folder": folder,
                              **{k: m[k] for k in ("fd_digits", "fd_std", "precision", "precision_std", "recall",
                                                   "recall_std", "num_samples", "class_accuracy",
                                                   "class_recall_mean") if k in m}})
    if not sweep["rows"]:
        if progress:
            progress.skip_to(progress.done + 1, entry["name"], "post-hoc sweep: nothing judged")
        return None
    best = min(sweep["rows"], key=lambda row: row["fd_digits"])
    sweep["best"] = best["sigma_rel"]
    return best["sigma_rel"], best["folder"]


# entry points that show a family's controllability (seed 001): latent interpolation for
# every family, partial denoising (SDEdit) for improved diffusion; one process each (a few


def controllability(entry, train_dir, base, data_train, reuse, failed, extra=None, progress=None) -> list:
    """[(what, png)] of the control stages the run's flag file asks for (compare_config.CONTROL_ROLES:
    `<package>.interpolate` with its INTERPOLATE_FLAGS, `<package>.edit` with its EDIT_FLAGS), run
    on the trained model, each role's `extra` flags from the config after them ({data}: the
    training folder); failures to `failed`."""
    shown = []
    for role, png_name, what in control_stages(entry["flag_file"]):
        stage_dir = os.path.join(base, role)
        flags = [f.replace("{data}", data_train) for f in (extra or {}).get(role, [])]
        argv = run_sh("local", 1, entry["flag_file"], f"{entry['package']}.{role}", "--model_path", train_dir,
                      "--logdir", stage_dir, *flags)
        rec = Stage(stage_dir, argv).run(reuse, progress)
        png = os.path.join(stage_dir, png_name)
        if rec["ok"] and os.path.isfile(png):
            shown.append((what, png))
        else:
            failed.append((what, rec if not rec["ok"] else {"error": f"{png}: not written"}))
    return shown
