"""Post-hoc EMA: the power-function average of any σ_rel, from a run's snapshots (edm2's method).

    python -m trainkit.posthoc_ema RUN_DIR --sigma_rel 0.05,0.1 [--step N] [--out DIR]

RUN_DIR is a training run of any family trained with --ema_std and --ema_snapshot_interval
(snapshots in RUN_DIR/phema_snapshots/). For each σ_rel the snapshots up to step N (default: the
newest) are combined with the least-squares weights of trainkit.phema.solve_coefficients into the
average that profile would have had at step N. Each result is a one-step checkpoint folder,
OUT/sigma_rel_{σ}/, holding the EMA file (`ema_posthoc{σ}_%06d.pt`, the model's layout: buffers such
as BatchNorm statistics from the step-N snapshot), a state file that records it as the
`sample_weights`, and the run's options.json: every family's sampler takes the folder as
--model_path (`python -m gans.sample --model_path OUT/sigma_rel_0.07`). OUT defaults to a fresh
`posthoc_ema-<time>/` inside RUN_DIR; no file of the training run is rewritten.
"""

import argparse
import json
import os
import sys

import blobfile as bf
import torch

from . import checkpoint, fileio, phema, run
from .errors import UserError


def snapshot_steps(run_dir: str) -> list:
    folder = bf.join(run_dir, phema.SNAPSHOT_DIR)
    if not bf.isdir(folder):
        return []
    steps = []
    for name in bf.listdir(folder):
        if name.startswith("snapshot") and name.endswith(".pt") and name[8:-3].isdigit():
            steps.append(int(name[8:-3]))
    return sorted(steps)


def load_snapshot(run_dir: str, step: int) -> dict:
    path = bf.join(run_dir, phema.SNAPSHOT_DIR, phema.SNAPSHOT_FILE.format(step))
    snap = checkpoint.load(path)
    if not isinstance(snap, dict) or not {"nimg", "sigma_rel", "averages", "parameters"} <= set(snap):
        raise UserError(f"{path}: not a power-function EMA snapshot")
    return snap


def reconstruct(run_dir: str, sigma_rels, step=None):
    """([state_dict per σ_rel], info): the post-hoc averages at `step` (default: the newest
    snapshot). Reads every snapshot up to `step` once, holding one float64 sum per target."""
    steps = snapshot_steps(run_dir)
    if not steps:
        raise UserError(f"{run_dir}: no power-function EMA snapshots ({phema.SNAPSHOT_DIR}/ is missing or empty); "
                        "train with --ema_std and --ema_snapshot_interval")
    if step is None:
        step = steps[-1]
    if step not in steps:
        raise UserError(f"--step {step}: {run_dir} has no snapshot of that step (snapshots: "
                        f"{', '.join(map(str, steps[:3]))}{' ...' if len(steps) > 6 else ''}"
                        f"{', ' + ', '.join(map(str, steps[-3:])) if len(steps) > 3 else ''})")
    used = [s for s in steps if s <= step]
    headers = []  # (nimg, sigma_rel list) per snapshot, read once for the weights
    for s in used:
        snap = load_snapshot(run_dir, s)
        if snap["nimg"] <= 0:
            raise UserError(f"{run_dir}: snapshot of step {s} records no images seen")
        headers.append((int(snap["nimg"]), [float(x) for x in snap["sigma_rel"]]))
    in_t = [t for t, stds in headers for _ in stds]
    in_sigma = [sd for _, stds in headers for sd in stds]
    t_out = headers[-1][0]
    weights = phema.solve_coefficients(in_t, in_sigma, [t_out] * len(sigma_rels), sigma_rels)
    sums = None
    last = None
    row = 0
    for s in used:
        snap = load_snapshot(run_dir, s)
        names = snap["parameters"]
        for avg in snap["averages"]:
            if sums is None:
                sums = [{n: torch.zeros_like(avg[n], dtype=torch.float64) for n in names} for _ in sigma_rels]
            for j, acc in enumerate(sums):
                w = float(weights[row, j])
                for n in names:
                    acc[n].add_(avg[n].double(), alpha=w)
            row += 1
        last = snap
    out = []
    template = last["averages"][0]
    for acc in sums:
        sd = {k: v.clone() for k, v in template.items()}  # buffers: the step-N model's
        for n, v in acc.items():
            sd[n] = v.to(template[n].dtype)
        out.append(sd)
    info = {"step": int(step), "nimg": t_out, "snapshots": used,
            "tracked_sigma_rel": sorted(set(in_sigma))}
    return out, info, weights


def prefix(sigma_rel: float) -> str:
    return f"ema_posthoc{phema.std_name(sigma_rel)}_"


def write_folder(folder: str, run_dir: str, sigma_rel: float, state_dict: dict, info: dict, column) -> None:
    """One complete single-step checkpoint folder (written whole or not at all)."""
    step = info["step"]
    name = prefix(sigma_rel)
    with fileio.atomic_dir(folder) as tmp:
        path = os.path.join(tmp, checkpoint.filename(name, step))
        torch.save(state_dict, path)
        record = {"step": step, "files": {name: os.path.getsize(path)}, "sample_weights": name,
                  "posthoc_ema": {"sigma_rel": float(sigma_rel), "nimg": info["nimg"],
                                  "snapshots": list(info["snapshots"]),
                                  "coefficients": [float(c) for c in column], "run": str(run_dir)}}
        torch.save(record, os.path.join(tmp, checkpoint.filename(checkpoint.STATE_PREFIX, step)))
        options_path = run.options_file(run_dir)
        if bf.exists(options_path):
            options = run.read_options_file(options_path)
            meta = dict(options.get("_run") or {})
            # a folder of sampling weights: training there is refused (run._refuse_other_role)
            meta.update(role="posthoc_ema", source_run=str(run_dir), sigma_rel=float(sigma_rel))
            options["_run"] = meta
            with open(os.path.join(tmp, checkpoint.OPTIONS), "w") as f:
                f.write(json.dumps(options, indent=2, sort_keys=True, default=str) + "\n")


def _sigma_list(text):
    try:
        values = phema.parse_stds(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one σ_rel, e.g. 0.05,0.1")
    return values


def create_parser():
    p = run.ArgumentParser(description="Reconstruct power-function EMA averages of any σ_rel from a run's "
                                       "snapshots (Karras et al. 2024) into folders every sampler reads.")
    p.add_argument("run_dir", help="a training run directory trained with --ema_std and --ema_snapshot_interval")
    p.add_argument("--sigma_rel", type=_sigma_list, required=True,
                   help="comma list of σ_rel to reconstruct, e.g. 0.05,0.1 (each in (0, 0.2887))")
    p.add_argument("--step", type=run.NONNEG_INT, default=None,
                   help="the snapshot step to reconstruct at (default: the newest snapshot)")
    p.add_argument("--out", default="",
                   help="output folder (default: a fresh RUN_DIR/posthoc_ema-<time>/); one "
                        "sigma_rel_{σ}/ checkpoint folder per σ_rel inside it")
    return p


@run.main
def main(argv=None):
    args = create_parser().parse_args(argv)
    run_dir = args.run_dir.rstrip("/")
    if not bf.isdir(run_dir):
        raise UserError(f"{run_dir}: no such run directory")
    averages, info, weights = reconstruct(run_dir, args.sigma_rel, args.step)
    out = args.out or run.output_dir(run_dir, "posthoc_ema")
    for j, (sigma, sd) in enumerate(zip(args.sigma_rel, averages)):
        folder = bf.join(out, f"sigma_rel_{phema.std_name(sigma)}")
        write_folder(folder, run_dir, sigma, sd, info, weights[:, j])
        print(f"σ_rel {sigma}: step {info['step']} ({info['nimg']} images) from {len(info['snapshots'])} "
              f"snapshot(s) of σ_rel {', '.join(map(str, info['tracked_sigma_rel']))} -> {folder} "
              f"(sample with --model_path {folder})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
