"""The main job: train every family on the same data, sample with fixed seeds, judge, report.

    python -m evaluations.compare --config flags/compare/digits.sh [--minutes 15] [--reuse]

For each run of the config (a family, its flag file, its share of the time): a near-untrained
baseline (one step: `$TRAINKIT_DEADLINE` already past), the training itself (stopped by its
share of `--minutes` through the same deadline, so it checkpoints and exits 0 like a preempted
job), then each of its samplers on the same sample indices and seeds. Every job is started
through `launch/run.sh` with the config's process count (mpiexec when available, else torchrun),
its output kept in `<stage>/launch.log`. Samples are judged by FD-digits (and class accuracy
when the samples carry labels); train img/s, wall times, sampling s/image, network evaluations
per image and parameter counts are recorded. Held-out real images (the data set's test split,
never trained on) are judged the same way as the first row (`judge_real`), every row on as many
samples as there are held-out images when fewer (FD's bias moves with n), and every row's
copies of the training set are measured (evaluations.copies). `report.md` and a self-contained `report.html`
go to the comparison's run directory; a stage that failed shows as failed and the rest go on.
While it runs, `Progress` shows stages done / total, elapsed and left of the budget, and a running
training's latest progress.csv step or a running sampler's samples written of the total (its
trainkit.sampling progress record); it ends with one summary line per run (report.summary_lines)
and the report's paths.

One job per module: compare_config (the config), stages (the runner and its stop policy),
compare_progress (the display), judging (the judge and its reference), compare_run (one run's
stages); this module runs the job. Ctrl-C stops the running stage's processes, its launcher's
included, before the job ends.

`--reuse` skips every stage that already finished in the same run directory with the same command
line; a stage whose command line changed (sample count, sampler flags, config) runs again.
"""

import os
import shlex
import subprocess
import sys
import time

import torch

from trainkit import npz, resources, run
from trainkit.errors import UserError

from . import report

# the job's parts, by their names here too (benchmarks and tests use evaluations.compare.X)
from .compare_config import drop_flag, guidance_scale, parse_pictures, parse_runs, posthoc_label, read_config  # noqa: F401 (re-export)
from .compare_progress import (  # noqa: F401 (re-export)
    Progress,
    budget_text,
    clock,
    format_progress,
    latest_progress,
    latest_sampling,
    stage_detail,
)
from .compare_run import (  # noqa: F401 (re-export)
    compare_run,
    find_samples,
    network_evaluations,
    parameter_count,
    planned_stages,
    read_options,
    read_quality,
)
from .judging import CLOSEST_PAIRS, HELDOUT_SPLITS, REAL_NAME, Judging, hold_out, judge, judge_images, judge_real  # noqa: F401 (re-export)
from .stages import Stage, command_identity, last_error_line, pick_launcher, run_sh  # noqa: F401 (re-export)

# flags/, launch/ and datasets/: the checkout's, or an installed wheel's copies (trainkit.resources)
ROOT = resources.ROOT


def build_parser():
    p = run.ArgumentParser(description="Train every family on the same data, sample, judge and report.")
    p.add_argument("--config", default="flags/compare/digits.sh",
                   help="the comparison's config: a shell file naming the runs, data, budget and judge")
    p.add_argument("--minutes", type=run.POSITIVE_FLOAT, default=None,
                   help="time budget of the whole job in minutes (default: the config's MINUTES)")
    p.add_argument("--logdir", default="", help="comparison directory (default runs/compare-<time>)")
    p.add_argument("--reuse", action="store_true",
                   help="skip stages that already finished in --logdir with the same command line "
                        "(its launcher and flag file compared by content)")
    p.add_argument("--launcher", default="auto", choices=["auto", "local", "mpiexec", "torchrun"],
                   help="how each stage is started (launch/run.sh); auto: local for one process, else mpiexec "
                        "when mpi4py and mpiexec are installed, else torchrun")
    p.add_argument("--nproc", type=run.POSITIVE_INT, default=None,
                   help="processes per job (default: the config's NPROC)")
    p.add_argument("--num_samples", type=run.POSITIVE_INT, default=None,
                   help="images each run samples for judging (default: the config's NUM_SAMPLES)")
    p.add_argument("--only", default="", help="comma-separated run names to include (empty: every run of the config)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any stage failed")
    p.add_argument("--data_root", default="", help="folder of the downloaded archives the config's DATA_PREP "
                   "converts (default: the config's DATA_ROOT)")
    p.add_argument("--data_dir", default="", help="the converted image folders, with train/ (default: the config's "
                   "DATA_DIR; converted there from --data_root when missing)")
    p.add_argument("--inception_weights", default=None, help="FEATURES=inception configs: a local "
                   "pt_inception-2015-12-05 weights file (default: torch hub's, downloaded if absent)")
    p.add_argument("--no_baseline", action="store_true", help="skip the one-step untrained baselines")
    p.add_argument("--no_control", action="store_true", help="skip the controllability stages (interpolation, SDEdit)")
    return p


def prepare_data(config, data_dir, data_root):
    """Make sure `data_dir`/train exists: convert it from `data_root` with the config's DATA_PREP
    when needed. Stops with one line naming the missing archive before anything trains."""
    if os.path.isdir(os.path.join(data_dir, "train")):
        return
    if not config["data_prep"]:
        raise UserError(f"{data_dir}: no train/ folder and the config has no DATA_PREP")
    root = os.path.abspath(data_root or ".")
    found = []
    for need in config["data_needs"]:  # "a|b": either name will do (gzipped or not, zip or folder)
        present = [alt for alt in need.split("|") if os.path.exists(os.path.join(root, alt))]
        found.append(present[0] if present else need.split("|")[0])
    # DATA_PREP's {data_root}, {data_dir} and {found[i]} (the name DATA_NEEDS' i-th entry has here)
    command = [a.format(data_root=root, data_dir=data_dir, found=found) for a in shlex.split(config["data_prep"])]
    if command and command[0] in ("python", "python3"):
        command[0] = sys.executable  # the interpreter running this job, with its packages
    for name in found:
        if not os.path.exists(os.path.join(root, name)):
            raise UserError(f"{os.path.join(root, name)}: missing; download it into {root} (or pass --data_root DIR); "
                            f"this job then converts it with `{shlex.join(command)}`")
    proc = subprocess.run(command, cwd=ROOT)
    if proc.returncode != 0 or not os.path.isdir(os.path.join(data_dir, "train")):
        raise UserError(f"{data_dir}: `{shlex.join(command)}` failed (exit {proc.returncode}); nothing was trained")



def ranks_for_this_host(nproc: int) -> int:
    """The config's NPROC, but no more ranks than visible GPUs when CUDA is there: each rank
    needs a GPU of its own (trainkit.dist stops a job that starts more), and a 1-GPU machine
    would otherwise fail every stage of a config that says NPROC=2. --nproc overrides."""
    if torch.cuda.is_available():
        return max(1, min(nproc, torch.cuda.device_count()))
    return nproc


@run.main
def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        job(args)
    except KeyboardInterrupt:
        # the running stage was stopped by stages.stop (its launcher and ranks included) on the way
        # here; what finished stays for --reuse
        print("evaluations.compare: interrupted; the running stage was stopped (finished stages stay for --reuse)",
              file=sys.stderr, flush=True)
        sys.exit(130)


def job(args):
    """The whole job for the parsed command line `args`."""
    config = read_config(args.config)
    if args.nproc is not None:
        config["nproc"] = args.nproc
    else:
        config["nproc"] = ranks_for_this_host(config["nproc"])
    if args.num_samples is not None:
        config["num_samples"] = args.num_samples
    minutes = args.minutes if args.minutes is not None else config["minutes"]
    if minutes <= 0:
        raise UserError(f"--minutes: {minutes} must be positive")
    if config["nproc"] < 1:
        raise UserError(f"--nproc: {config['nproc']} must be positive")
    runs = config["runs"]
    if args.only:
        wanted = [w for w in args.only.split(",") if w]
        unknown = sorted(set(wanted) - {r["name"] for r in runs})
        if unknown:
            raise UserError(f"--only: no run named {', '.join(unknown)} in {args.config}")
        runs = [r for r in runs if r["name"] in wanted]
    for r in runs:
        resources.find(r["flag_file"], f"flag file (run {r['name']} of {args.config})")  # before anything runs

    data_dir = args.data_dir or config["data_dir"]
    data_dir = os.path.abspath(data_dir if os.path.isabs(data_dir) or args.data_dir
                               else os.path.join(resources.base_dir(), data_dir))
    # --data_root is the user's (relative to the working directory); DATA_ROOT the config's, like DATA_DIR
    data_root = os.path.abspath(args.data_root) if args.data_root else (
        os.path.join(resources.base_dir(), config["data_root"]) if config["data_root"] else os.getcwd())
    prepare_data(config, data_dir, data_root)
    out = os.path.abspath(args.logdir or os.path.join("runs", time.strftime("compare-%Y%m%d-%H%M%S")))
    os.makedirs(out, exist_ok=True)
    data_train, heldout_dir, heldout_note = os.path.join(data_dir, "train"), None, None
    if config["reference"] != "digits" and not any(os.path.isdir(os.path.join(data_dir, s)) for s in HELDOUT_SPLITS):
        # no held-out split: hold a part of the training folder out, and train on the rest only
        data_train, heldout_dir, heldout_note = hold_out(data_train, out)
    judging = Judging(config["features"], config["reference"], data_train,
                      config["reference_size"], config["class_accuracy"], args.inception_weights,
                      cache_dir=out, heldout_dir=heldout_dir, heldout_note=heldout_note)
    launcher = args.launcher if args.launcher != "auto" else pick_launcher(config["nproc"])
    total_share = sum(r["share"] for r in runs)
    train_budget = minutes * 60 * config["train_fraction"]
    print(f"comparison in {out}: {len(runs)} runs, {launcher} x {config['nproc']}, {minutes:g} min "
          f"({train_budget:.0f} s of training shared out)", flush=True)

    started = time.time()
    baseline, control = not args.no_baseline, not args.no_control
    planned = [planned_stages(entry, baseline, control) for entry in runs]
    progress = Progress(sum(planned) + 1, minutes * 60)  # + 1: the report
    results = []
    for entry, stages in zip(runs, planned):
        seconds = train_budget * entry["share"] / total_share
        progress.echo(f"[{entry['name']}] training for up to {seconds:.0f} s, then sampling")
        after = progress.done + stages
        try:
            result = compare_run(entry, config, out, launcher, seconds, args.reuse, data_train,
                                 baseline=baseline, control=control, judging=judging, progress=progress)
        except UserError as e:
            result = {"name": entry["name"], "package": entry["package"], "dir": os.path.join(out, entry["name"]),
                      "rows": [], "failed": [("evaluation", {"error": str(e)})], "flag_file": entry["flag_file"]}
        for what, rec in result["failed"]:
            progress.echo(f"[{entry['name']}] FAILED {what}: {rec.get('error')}")
        progress.skip_to(after, entry["name"], "its remaining stages skipped")
        results.append(result)

    progress.start("report")
    # the real-data row, at the n the rows were judged on and at the probe's n (the figure's band)
    judged = [row for r in results for row in r["rows"] if row.get("npz") and row.get("num_samples")]
    real = None
    if judged:
        size = npz.read_samples(judged[0]["npz"])[0].shape[1]
        real = judge_real(judging, size, judged[0]["num_samples"], os.path.join(out, "heldout"),
                          config["probe_samples"] if config["probe_points"] else None)
    meta = report.environment(launcher, config["nproc"])
    meta.update(config=resources.find(args.config), minutes=minutes, wall_seconds=time.time() - started,
                num_samples=config["num_samples"], fd_name=judging.fd_name, reference=judging.describe_reference(),
                data_name="the real digits" if config["reference"] == "digits" else "the training images",
                pictures=config["pictures"], loss_picture=config["loss_picture"], real=real,
                heldout=real["description"] if real else judging.missing_heldout() if judged else
                "not judged (no run produced samples)")
    if judging.features == "inception":
        meta["feature_network"] = "Inception-v3 of pytorch-fid (FID weights), 2048-d pool features"
        meta["is_source"] = "Inception-v3's 1008-way logits"
    paths = report.write(out, results, meta)
    progress.finish("report", "written")
    progress.close()
    failed = sum(len(r["failed"]) for r in results)
    print("\n".join(report.summary_lines(results, judging.fd_name, real)))
    print(f"report: {paths['html']}")
    print(f"report: {paths['md']}")
    if failed:
        print(f"{failed} stage(s) failed; see the report", flush=True)
        if args.strict:
            sys.exit(1)


if __name__ == "__main__":
    main()
