"""The main job: train every family on the same data, sample with fixed seeds, judge, report.

    python -m evaluations.compare --config flags/compare/digits.sh [--minutes 15] [--reuse]

For each run of the config (a family, its flag file, its share of the time): a near-untrained
baseline (one step: `$TRAINKIT_DEADLINE` already past), the training itself (stopped by its
share of `--minutes` through the same deadline, so it checkpoints and exits 0 like a preempted
job), then each of its samplers on the same sample indices and seeds. Every job is started
through `launch/run.sh` with the config's process count (mpiexec when available, else torchrun),
its output kept in `<stage>/launch.log`. Samples are judged by FD-digits (and class accuracy
when the samples carry labels); train img/s, wall times, sampling s/image, network evaluations
per image and parameter counts are recorded. `report.md` and a self-contained `report.html`
go to the comparison's run directory; a stage that failed shows as failed and the rest go on.

`--reuse` skips every stage that already finished in the same run directory.
"""

import glob
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

import torch

from trainkit import checkpoint, fileio, npz, run
from trainkit.errors import UserError

from . import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_KEYS = ("DATA_DIR", "DATA_PREP", "NPROC", "MINUTES", "TRAIN_FRACTION", "NUM_SAMPLES", "SAMPLE_BATCH", "RUNS")


# --- configuration ----------------------------------------------------------------------

def read_config(path: str) -> dict:
    """Source the shell config in bash and read its variables back (it stays plain shell)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such comparison config")
    script = 'source "$0" >/dev/null || exit 3; for v in ' + " ".join(CONFIG_KEYS) + '; do printf "%s=%s\\0" "$v" "${!v-}"; done'
    proc = subprocess.run(["bash", "-c", script, path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"{path}: the config failed to load in bash ({proc.stderr.strip()[:200]})")
    values = dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    try:
        config = {
            "data_dir": values["DATA_DIR"],
            "data_prep": values.get("DATA_PREP", ""),
            "nproc": int(values.get("NPROC") or 2),
            "minutes": float(values.get("MINUTES") or 15),
            "train_fraction": float(values.get("TRAIN_FRACTION") or 0.5),
            "num_samples": int(values.get("NUM_SAMPLES") or 500),
            "sample_batch": int(values.get("SAMPLE_BATCH") or 100),
            "runs": parse_runs(values.get("RUNS", ""), path),
        }
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    if not config["data_dir"]:
        raise UserError(f"{path}: DATA_DIR is not set")
    if not config["runs"]:
        raise UserError(f"{path}: RUNS lists no run")
    return config


def parse_runs(text: str, path: str) -> list:
    runs = []
    for line in text.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != 6:
            raise ValueError(f"RUNS line {line.strip()!r} needs 6 '|'-separated cells, has {len(cells)}")
        name, flag_file, package, share, train_flags, samplers = cells
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"run name {name!r} may only hold letters, digits, '_', '.', '-'")
        parsed = []
        for part in (samplers.split(";") if samplers else [""]):
            label, _, flags = part.partition(":") if ":" in part else ("", "", part)
            parsed.append({"label": label.strip() or "default", "flags": shlex.split(flags)})
        runs.append({"name": name, "flag_file": flag_file, "package": package, "share": float(share),
                      "train_flags": shlex.split(train_flags), "samplers": parsed})
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names repeat: {names}")
    return runs


# --- running stages ---------------------------------------------------------------------

def pick_launcher(nproc: int) -> str:
    if nproc == 1:
        return "local"
    import importlib.util
    from shutil import which

    # find_spec asks whether mpi4py is installed without importing it (importing starts MPI).
    have_mpi = importlib.util.find_spec("mpi4py") is not None
    return "mpiexec" if have_mpi and which("mpiexec") else "torchrun"


class Stage:
    """One launch/run.sh job with its own directory, log and record of success."""

    def __init__(self, directory, argv, env_extra=None):
        self.dir = directory
        self.argv = argv
        self.env_extra = env_extra or {}
        self.record_path = os.path.join(directory, "stage.json")

    def done_before(self):
        if os.path.exists(self.record_path):
            with open(self.record_path) as f:
                record = json.load(f)
            return record if record.get("ok") else None
        return None

    def run(self, reuse: bool) -> dict:
        if reuse:
            record = self.done_before()
            if record:
                record["reused"] = True
                return record
        os.makedirs(self.dir, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env_extra)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHON", sys.executable)
        log_path = os.path.join(self.dir, "launch.log")
        start = time.time()
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(shlex.quote(a) for a in self.argv) + "\n")
            log.flush()
            code = subprocess.call(self.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.time() - start
        record = {"ok": code == 0, "exit": code, "seconds": seconds, "log": log_path}
        if code != 0:
            record["error"] = last_error_line(log_path)
        with open(self.record_path, "w") as f:
            json.dump(record, f, indent=2)
        return record


def last_error_line(log_path: str) -> str:
    with open(log_path, errors="replace") as f:
        lines = [l.strip() for l in f if l.strip()]
    for l in reversed(lines):
        if "error" in l.lower():
            return l[:300]
    return lines[-1][:300] if lines else "no output"


def run_sh(launcher, nproc, flag_file, module, *flags):
    return ["bash", os.path.join(ROOT, "launch", "run.sh"), launcher, str(nproc), flag_file, module, *map(str, flags)]


# --- measurements -----------------------------------------------------------------------

def read_options(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "options.json")) as f:
        return json.load(f)


def parameter_count(ck) -> int:
    """Learned parameters in the checkpoint's model file (BatchNorm statistics excluded)."""
    sd = ck.load("model")
    skip = ("running_mean", "running_var", "num_batches_tracked")
    total = 0
    for k, v in sd.items():
        if torch.is_tensor(v) and v.is_floating_point() and not k.endswith(skip):
            total += v.numel()
    return total


def network_evaluations(package: str, options: dict, sample_flags: list) -> int:
    """Forward passes of the sampling network per image."""
    if package == "ddgan":
        return int(options.get("num_timesteps", 4))
    if package == "improved_diffusion":
        flags = dict(zip(sample_flags[::2], sample_flags[1::2]))
        if int(flags.get("--steps", 0) or 0):  # the ODE samplers: heun's N steps cost 2N - 1
            n = int(flags["--steps"])
            return 2 * n - 1 if flags.get("--sampler") == "heun" else n
        respacing = flags.get("--timestep_respacing", options.get("timestep_respacing", "")) or ""
        steps = int(options.get("diffusion_steps", 1000))
        if respacing.startswith("ddim"):
            return int(respacing[4:])
        if respacing:
            return sum(int(x) for x in respacing.split(","))
        return steps
    return 1


def find_samples(directory: str) -> str:
    """The stage's npz: in its directory, or, when the stage ran again over an earlier run's
    files, in the fresh samples-<time> subfolder the sampler wrote instead (trainkit.run)."""
    for d in [directory] + sorted(glob.glob(os.path.join(directory, "samples-*")), reverse=True):
        found = sorted(n for n in os.listdir(d) if n.startswith("samples_") and n.endswith(".npz"))
        if found:
            return os.path.join(d, found[-1])
    raise UserError(f"{directory}: the sampler wrote no samples_*.npz")


def judge(npz_path: str, seed: int = 0) -> dict:
    """FD-digits with its bootstrap std, KID, precision/recall (k = 3) and the digits-classifier
    Inception Score of a samples npz against the real digits (train split, at the samples' size),
    and the class accuracy of labelled samples. Also written to `<npz>.metrics.json`."""
    from . import digits_features, metrics

    images, labels = npz.read_samples(npz_path)
    net = digits_features.load_classifier()
    feats, logits = digits_features.features(images, net), digits_features.logits(images, net)
    ref = digits_features.features(digits_features.digits_images("train", images.shape[1])[0], net)
    m = metrics.evaluate_features(ref, feats, logits, splits=min(10, len(images)), seed=seed)
    out = {"fd_digits": m["fd"][0], "fd_std": m["fd"][1], "kid": m["kid"][0], "kid_std": m["kid"][1],
           "precision": m["precision"], "recall": m["recall"], "is": m["is"][0], "is_std": m["is"][1],
           "num_samples": int(len(images))}
    # binomial standard errors: precision is a mean over the samples, recall over the reference
    out["precision_std"] = math.sqrt(out["precision"] * (1 - out["precision"]) / len(feats))
    out["recall_std"] = math.sqrt(out["recall"] * (1 - out["recall"]) / len(ref))
    if labels is not None:
        out["class_accuracy"] = digits_features.accuracy(images, labels, net)
    fileio.write_text(npz_path + ".metrics.json", json.dumps(out, indent=2) + "\n")
    return out


# --- the job ----------------------------------------------------------------------------

def build_parser():
    p = run.ArgumentParser(description="Train every family on the same data, sample, judge and report.")
    p.add_argument("--config", default="flags/compare/digits.sh")
    p.add_argument("--minutes", type=float, default=None, help="time budget of the whole job (default: the config's MINUTES)")
    p.add_argument("--logdir", default="", help="comparison directory (default runs/compare-<time>)")
    p.add_argument("--reuse", action="store_true", help="skip stages that already finished in --logdir")
    p.add_argument("--launcher", default="auto", choices=["auto", "local", "mpiexec", "torchrun"])
    p.add_argument("--nproc", type=int, default=None, help="processes per job (default: the config's NPROC)")
    p.add_argument("--num_samples", type=int, default=None)
    p.add_argument("--only", default="", help="comma-separated run names to include")
    p.add_argument("--strict", action="store_true", help="exit 1 when any stage failed")
    return p


def compare_run(entry, config, out, launcher, train_seconds, reuse, data_train, baseline=True, control=True) -> dict:
    name, package = entry["name"], entry["package"]
    nproc, n, batch = config["nproc"], config["num_samples"], config["sample_batch"]
    base = os.path.join(out, name)
    result = {"name": name, "package": package, "flag_file": entry["flag_file"], "dir": base, "rows": [], "failed": []}
    common_train = ["--data_dir", data_train, *entry["train_flags"]]

    def train(stage_dir, deadline_seconds):
        # The deadline is set when the stage starts, so waiting in line costs no training time.
        deadline = {"TRAINKIT_DEADLINE": str(time.time() + deadline_seconds)}
        argv = run_sh(launcher, nproc, entry["flag_file"], f"{package}.train", *common_train, "--logdir", stage_dir)
        return Stage(stage_dir, argv, deadline).run(reuse)

    def sample(model_dir, stage_dir, flags):
        argv = run_sh(launcher, nproc, entry["flag_file"], f"{package}.sample", "--model_path", model_dir,
                      "--num_samples", n, "--batch_size", batch, "--seed", 0, "--logdir", stage_dir, *flags)
        return Stage(stage_dir, argv).run(reuse)

    # A baseline trained for one step: what "untrained" scores. It uses the run's cheapest
    # sampler: the point is how far training moved the network, and a 100-step diffusion
    # sampler would spend minutes of the budget on noise.
    untrained_dir = os.path.join(base, "untrained")
    rec = train(untrained_dir, 0) if baseline else {"ok": False, "skipped": True}
    baseline = None
    if rec["ok"]:
        options = read_options(untrained_dir)
        cheapest = min(entry["samplers"], key=lambda s: network_evaluations(package, options, s["flags"]))
        result["baseline_nfe"] = network_evaluations(package, options, cheapest["flags"])
        srec = sample(untrained_dir, os.path.join(base, "untrained-samples"), cheapest["flags"])
        if srec["ok"]:
            result["untrained"] = judge(find_samples(os.path.join(base, "untrained-samples")))
            baseline = result["untrained"]["fd_digits"]
        else:
            result["failed"].append(("untrained samples", srec))
    elif not rec.get("skipped"):
        result["failed"].append(("untrained", rec))

    train_dir = os.path.join(base, "train")
    rec = train(train_dir, train_seconds)
    result["train"] = rec
    if not rec["ok"]:
        result["failed"].append(("train", rec))
        return result
    options = read_options(train_dir)
    ck = checkpoint.latest(train_dir)
    if ck is None:
        result["failed"].append(("train", {"error": f"{train_dir}: no complete checkpoint"}))
        return result
    world = options.get("_run", {}).get("world_size", nproc)
    result.update(
        steps=ck.step,
        train_seconds=rec["seconds"],
        train_img_per_s=ck.step * int(options.get("batch_size", 0)) * world / max(rec["seconds"], 1e-9),
        parameters=parameter_count(ck),
        progress=os.path.join(train_dir, "progress.csv"),
        loss=options.get("loss"),  # gans' D loss kind: its chance value (evaluations.verdict)
    )
    for sampler in entry["samplers"]:
        stage_dir = os.path.join(base, f"samples-{sampler['label']}")
        srec = sample(train_dir, stage_dir, sampler["flags"])
        row = {"sampler": sampler["label"], "dir": stage_dir, "fd_untrained": baseline,
               "nfe": network_evaluations(package, options, sampler["flags"])}
        if srec["ok"]:
            row["npz"] = find_samples(stage_dir)
            row.update(judge(row["npz"]))
            row["sample_seconds"] = srec["seconds"]
            row["sample_s_per_image"] = srec["seconds"] / row["num_samples"]
        else:
            row["error"] = srec.get("error")
            row["log"] = srec.get("log")
            result["failed"].append((f"samples {sampler['label']}", srec))
        result["rows"].append(row)
    if control:
        result["control"] = controllability(entry, train_dir, base, data_train, reuse, result["failed"])
    return result


# entry points that show a family's controllability (seed 001): latent interpolation for
# every family, partial denoising (SDEdit) for improved diffusion; one process each (a few
# dozen images), their flags from the flag file's INTERPOLATE_FLAGS / EDIT_FLAGS.
CONTROL = {
    "gans": [("interpolation", "gans.interpolate", "interpolation.png", [])],
    "ddgan": [("interpolation", "ddgan.interpolate", "interpolation.png", [])],
    "improved_diffusion": [("interpolation", "improved_diffusion.interpolate", "interpolation.png", []),
                           ("partial denoising", "improved_diffusion.edit", "edit.png", ["--images", "{data}"])],
}


def controllability(entry, train_dir, base, data_train, reuse, failed) -> list:
    """[(what, png)] of the family's CONTROL stages run on the trained model; failures to `failed`."""
    shown = []
    for what, module, png_name, flags in CONTROL.get(entry["package"], []):
        stage_dir = os.path.join(base, module.rsplit(".", 1)[1])
        flags = [f.format(data=data_train) for f in flags]
        argv = run_sh("local", 1, entry["flag_file"], module, "--model_path", train_dir, "--logdir", stage_dir, *flags)
        rec = Stage(stage_dir, argv).run(reuse)
        png = os.path.join(stage_dir, png_name)
        if rec["ok"] and os.path.isfile(png):
            shown.append((what, png))
        else:
            failed.append((what, rec if not rec["ok"] else {"error": f"{png}: not written"}))
    return shown


@run.main
def main(argv=None):
    args = build_parser().parse_args(argv)
    config = read_config(args.config)
    if args.nproc is not None:
        config["nproc"] = args.nproc
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
        if not os.path.isfile(os.path.join(ROOT, r["flag_file"])):
            raise UserError(f"{args.config}: flag file {r['flag_file']} of run {r['name']} does not exist")

    out = os.path.abspath(args.logdir or os.path.join("runs", time.strftime("compare-%Y%m%d-%H%M%S")))
    os.makedirs(out, exist_ok=True)
    data_dir = config["data_dir"] if os.path.isabs(config["data_dir"]) else os.path.join(ROOT, config["data_dir"])
    if not os.path.isdir(os.path.join(data_dir, "train")):
        if not config["data_prep"]:
            raise UserError(f"{data_dir}: no train/ folder and the config has no DATA_PREP")
        subprocess.run(shlex.split(config["data_prep"]), cwd=ROOT, check=True)
    launcher = args.launcher if args.launcher != "auto" else pick_launcher(config["nproc"])
    total_share = sum(r["share"] for r in runs)
    train_budget = minutes * 60 * config["train_fraction"]
    print(f"comparison in {out}: {len(runs)} runs, {launcher} x {config['nproc']}, {minutes:g} min "
          f"({train_budget:.0f} s of training shared out)", flush=True)

    started = time.time()
    results = []
    for entry in runs:
        seconds = train_budget * entry["share"] / total_share
        print(f"[{entry['name']}] training for up to {seconds:.0f} s, then sampling", flush=True)
        try:
            result = compare_run(entry, config, out, launcher, seconds, args.reuse, os.path.join(data_dir, "train"))
        except UserError as e:
            result = {"name": entry["name"], "package": entry["package"], "dir": os.path.join(out, entry["name"]),
                      "rows": [], "failed": [("evaluation", {"error": str(e)})], "flag_file": entry["flag_file"]}
        for what, rec in result["failed"]:
            print(f"[{entry['name']}] FAILED {what}: {rec.get('error')}", flush=True)
        results.append(result)

    meta = report.environment(launcher, config["nproc"])
    meta.update(config=os.path.abspath(args.config), minutes=minutes, wall_seconds=time.time() - started,
                num_samples=config["num_samples"])
    paths = report.write(out, results, meta)
    failed = sum(len(r["failed"]) for r in results)
    print(f"report: {paths['html']}")
    print(f"report: {paths['md']}")
    if failed:
        print(f"{failed} stage(s) failed; see the report", flush=True)
        if args.strict:
            sys.exit(1)


if __name__ == "__main__":
    main()
