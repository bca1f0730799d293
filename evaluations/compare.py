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

`--reuse` skips every stage that already finished in the same run directory with the same command
line; a stage whose command line changed (sample count, sampler flags, config) runs again.
"""

import csv
import glob
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time

import torch

from trainkit import checkpoint, fileio, npz, resources, run, sampling
from trainkit.errors import UserError

from . import report

# flags/, launch/ and datasets/: the checkout's, or an installed wheel's copies (trainkit.resources)
ROOT = resources.ROOT
CONFIG_KEYS = ("DATA_DIR", "DATA_PREP", "DATA_ROOT", "DATA_NEEDS", "NPROC", "MINUTES", "TRAIN_FRACTION", "NUM_SAMPLES",
               "SAMPLE_BATCH", "RUNS", "FEATURES", "REFERENCE", "REFERENCE_SIZE", "CLASS_ACCURACY", "PICTURES",
               "LOSS_PICTURE", "PROBE_POINTS", "PROBE_SAMPLES", "POSTHOC_EMA", "POSTHOC_SAMPLES", "GUIDANCE_FLAG")


# --- configuration ----------------------------------------------------------------------

def read_config(path: str) -> dict:
    """Source the shell config in bash and read its variables back (it stays plain shell)."""
    source = resources.find(path, "comparison config")  # as given, else the shipped copy
    script = 'source "$0" >/dev/null || exit 3; for v in ' + " ".join(CONFIG_KEYS) + '; do printf "%s=%s\\0" "$v" "${!v-}"; done'
    proc = subprocess.run(["bash", "-c", script, source], capture_output=True, text=True)
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
            "data_root": values.get("DATA_ROOT", ""),
            "data_needs": values.get("DATA_NEEDS", "").split(),
            "features": values.get("FEATURES") or "digits",
            "reference": values.get("REFERENCE") or "digits",
            "reference_size": int(values.get("REFERENCE_SIZE") or 10000),
            "class_accuracy": (values.get("CLASS_ACCURACY") or "yes").lower() in ("yes", "true", "1"),
            "pictures": parse_pictures(values.get("PICTURES", "")),
            "loss_picture": values.get("LOSS_PICTURE", ""),
            # unset: 4 probes of 200 samples; PROBE_POINTS=0 trains without the probe
            "probe_points": int(values.get("PROBE_POINTS") or "4"),
            "probe_samples": int(values.get("PROBE_SAMPLES") or "200"),
            # the sampling flag whose value is a guidance scale: rows are plotted against it
            "guidance_flag": values.get("GUIDANCE_FLAG") or "--guidance_scale",
        }
        # the post-hoc EMA sweep's sample count: the probe's n unless set
        posthoc_samples = int(values.get("POSTHOC_SAMPLES") or config["probe_samples"] or 200)
        attach_posthoc(config["runs"], values.get("POSTHOC_EMA", ""), posthoc_samples)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    if not config["data_dir"]:
        raise UserError(f"{path}: DATA_DIR is not set")
    if not config["runs"]:
        raise UserError(f"{path}: RUNS lists no run")
    if config["features"] not in ("digits", "inception"):
        raise UserError(f"{path}: FEATURES={config['features']!r}: choose digits or inception")
    if config["reference"] not in ("digits", "train"):
        raise UserError(f"{path}: REFERENCE={config['reference']!r}: choose digits (the sklearn digits' train split) "
                        "or train (DATA_DIR/train)")
    if config["features"] == "inception" and config["reference"] == "digits":
        raise UserError(f"{path}: FEATURES=inception needs REFERENCE=train")
    names = {r["name"] for r in config["runs"]}
    for name, filename, _ in config["pictures"]:
        if name not in names:
            raise UserError(f"{path}: PICTURES names run {name!r}, which RUNS does not have")
    return config


def parse_pictures(text: str) -> list:
    """PICTURES lines `RUN | FILE.png [| SAMPLER]`: the seed's name for a run's sample grid."""
    pictures = []
    for line in text.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        cells = [c.strip() for c in line.split("|")]
        if len(cells) not in (2, 3) or not re.fullmatch(r"[A-Za-z0-9_.-]+\.png", cells[1]):
            raise ValueError(f"PICTURES line {line.strip()!r}: expected 'RUN | NAME.png [| SAMPLER]'")
        pictures.append((cells[0], cells[1], cells[2] if len(cells) == 3 and cells[2] else None))
    return pictures


def attach_posthoc(runs: list, text: str, samples: int):
    """POSTHOC_EMA lines `RUN | σ_rel,σ_rel,... [| SAMPLER]`: the run (trained with --ema_std and
    --ema_snapshot_interval) gets a post-hoc EMA sweep, `run["posthoc"]`: each σ_rel reconstructed
    from its snapshots (trainkit.posthoc_ema), sampled `samples` times with SAMPLER (default: the
    run's first) and judged; the best by FD is then sampled like every row."""
    by_name = {r["name"]: r for r in runs}
    for line in text.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        cells = [c.strip() for c in line.split("|")]
        if len(cells) not in (2, 3):
            raise ValueError(f"POSTHOC_EMA line {line.strip()!r}: expected 'RUN | SIGMA_REL,... [| SAMPLER]'")
        name, sigmas, sampler = cells[0], cells[1], (cells[2] if len(cells) == 3 else "")
        if name not in by_name:
            raise ValueError(f"POSTHOC_EMA names run {name!r}, which RUNS does not have")
        try:
            values = [float(x) for x in sigmas.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"POSTHOC_EMA line {line.strip()!r}: {sigmas!r} is not a comma list of σ_rel") from None
        if not values or not all(0 < v < 0.2887 for v in values):  # σ_rel's range (trainkit.phema)
            raise ValueError(f"POSTHOC_EMA line {line.strip()!r}: each σ_rel must lie in (0, 0.2887)")
        labels = [s["label"] for s in by_name[name]["samplers"]]
        if sampler and sampler not in labels:
            raise ValueError(f"POSTHOC_EMA line {line.strip()!r}: run {name} has no sampler {sampler!r} ({labels})")
        by_name[name]["posthoc"] = {"sigma_rels": values, "sampler": sampler or labels[0], "samples": samples}


def posthoc_label(sigma_rel: float, sampler: str) -> str:
    """The row label of a post-hoc average's full sampling: `phema0.1` or `phema0.1-SAMPLER`."""
    return f"phema{sigma_rel:g}" + ("" if sampler == "default" else f"-{sampler}")


def guidance_scale(flags: list, flag: str):
    """The value of the guidance flag among a sampler's flags, or None when it has none."""
    for i, a in enumerate(flags):
        if a == flag and i + 1 < len(flags):
            return float(flags[i + 1])
        if a.startswith(flag + "="):
            return float(a.split("=", 1)[1])
    return None


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


def command_identity(argv) -> list:
    """What decides whether a stage's earlier success answers the same question: its command line,
    each shell file it names (launch/run.sh, the flag file) stood for by its name and a digest of
    its content. An edited flag file runs the stage again; the same files at another path (the
    installed package's copies, a checkout elsewhere) do not by themselves."""
    out = []
    for a in map(str, argv):
        if a.endswith(".sh") and os.path.isfile(a):
            with open(a, "rb") as f:
                a = f"{os.path.basename(a)}@sha256:{hashlib.sha256(f.read()).hexdigest()[:16]}"
        out.append(a)
    return out


class Stage:
    """One launch/run.sh job with its own directory, log and record of success."""

    def __init__(self, directory, argv, env_extra=None, label=None, watch_csv=None, watch_samples=False):
        self.dir = directory
        self.argv = argv
        self.env_extra = env_extra or {}
        self.record_path = os.path.join(directory, "stage.json")
        # shown by the job's progress display: RUN/STAGE, and a training's progress.csv or (watch_samples)
        # a sampler's progress record to read while it runs
        self.label = label or os.path.join(os.path.basename(os.path.dirname(directory)), os.path.basename(directory))
        self.watch_csv = watch_csv
        self.watch_samples = watch_samples
        deadline = self.env_extra.get("TRAINKIT_DEADLINE")
        self.deadline = float(deadline) if deadline else None

    def done_before(self):
        """The record of this stage's earlier success with the same command (`command_identity`),
        else None: a stage whose flags changed (another sample count, sampler or config) or whose
        flag file was edited runs again."""
        if os.path.exists(self.record_path):
            with open(self.record_path) as f:
                record = json.load(f)
            if "identity" in record:
                same = record["identity"] == command_identity(self.argv)
            else:  # recorded before identities: the command line as it was typed
                same = record.get("argv") == [str(a) for a in self.argv]
            return record if record.get("ok") and same else None
        return None

    def run(self, reuse: bool, progress=None) -> dict:
        """Run the job (or, with `reuse`, take its earlier success); `progress` (a Progress) hears
        when it starts and ends and, every `progress.poll_seconds` while it runs, how far it is."""
        if reuse:
            record = self.done_before()
            if record:
                record["reused"] = True
                if progress:
                    progress.finish(self.label, "reused")
                return record
        os.makedirs(self.dir, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env_extra)
        if resources.CHECKOUT:  # an installed package's children import the installed modules
            env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHON", sys.executable)
        log_path = os.path.join(self.dir, "launch.log")
        start = time.time()
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(shlex.quote(a) for a in self.argv) + "\n")
            log.flush()
            if progress:
                progress.start(self.label)
            with subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) as proc:
                try:
                    code = self._wait(proc, start, progress)
                except BaseException:  # as subprocess.call: an interrupted job does not outlive us
                    proc.kill()
                    raise
        seconds = time.time() - start
        record = {"ok": code == 0, "exit": code, "seconds": seconds, "log": log_path,
                  "argv": [str(a) for a in self.argv], "identity": command_identity(self.argv)}
        if code != 0:
            record["error"] = last_error_line(log_path)
        with fileio.atomic_path(self.record_path) as tmp, open(tmp, "w") as f:  # never a half record
            json.dump(record, f, indent=2)
        if progress:
            progress.finish(self.label, f"done in {clock(seconds)}" if code == 0 else f"FAILED (exit {code})")
        return record

    def _wait(self, proc, start, progress) -> int:
        if progress is None:
            return proc.wait()
        while True:
            try:
                return proc.wait(timeout=progress.poll_seconds)
            except subprocess.TimeoutExpired:
                latest = (latest_progress(self.watch_csv) if self.watch_csv
                          else latest_sampling(self.dir, start) if self.watch_samples else None)
                progress.running(self.label, time.time() - start, latest, self.deadline)


def last_error_line(log_path: str) -> str:
    with open(log_path, errors="replace") as f:
        lines = [l.strip() for l in f if l.strip()]
    for l in reversed(lines):
        if "error" in l.lower():
            return l[:300]
    return lines[-1][:300] if lines else "no output"


def run_sh(launcher, nproc, flag_file, module, *flags):
    return ["bash", resources.run_sh(), launcher, str(nproc), resources.find(flag_file, "flag file"), module,
            *map(str, flags)]


# --- progress ---------------------------------------------------------------------------

def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour up."""
    h, rest = divmod(int(round(max(seconds, 0))), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def latest_progress(path: str, tail_bytes: int = 65536):
    """The last complete row of the progress.csv a running training is writing, as {column: float
    or text} (blank cells left out, as logger.read_progress), or None while it has none. Reads the
    header and the file's tail only. The training may be in the middle of a line (no newline yet:
    skipped), or rewriting the file because a column appeared (a row whose cell count is not the
    header's: skipped); the next look sees the finished file."""
    try:
        with open(path, "rb") as f:
            header = f.readline()
            start = max(len(header), os.fstat(f.fileno()).st_size - tail_bytes)
            f.seek(start)
            tail = f.read()
    except OSError:  # not written yet
        return None
    if not header.endswith(b"\n"):
        return None
    keys = next(csv.reader([header.decode(errors="replace").rstrip("\r\n")]))
    lines = tail.split(b"\n")[:-1]  # the last piece follows the last newline: empty or half-written
    if start > len(header):
        lines = lines[1:]  # the tail began inside a line
    for line in reversed(lines):
        text = line.decode(errors="replace").rstrip("\r")
        cells = next(csv.reader([text]), [])
        if not text or len(cells) != len(keys):
            continue
        row = {}
        for k, v in zip(keys, cells):
            if v != "":
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
        return row
    return None


def latest_sampling(stage_dir: str, since: float = 0.0):
    """The progress record (trainkit.sampling.read_progress) of the sampler a sampling stage runs,
    or None while it has written none. The sampler writes into the stage's directory or, when that
    holds an earlier run's files, into a fresh samples-<time> subfolder (as find_samples); a record
    whose sampling started before `since` (the stage's start) is an earlier run's and not shown."""
    for d in sorted(glob.glob(os.path.join(stage_dir, "samples-*")), reverse=True) + [stage_dir]:
        record = sampling.read_progress(d)
        if record and record["started"] >= since:
            return record
    return None


def sampling_detail(record: dict) -> list:
    """`256/500 samples, 12.3 img/s, ETA 0:20` from a sampler's progress record (the rate once a
    batch is done)."""
    done, total = int(record["samples_done"]), int(record["samples_total"])
    parts = [f"{done:,}/{total:,} samples"]
    if done > 0 and record["seconds"] > 0:
        rate = done / record["seconds"]
        parts += [f"{rate:.3g} img/s", f"ETA {clock(max(total - done, 0) / rate)}"]
    return parts


def stage_detail(seconds: float, latest=None, deadline_in=None) -> str:
    """What a running stage shows: how long it has run and, for a training, its latest logged step
    with the img/s and ETA columns when the training logs them (else the time to its deadline);
    for a sampler (`latest` its progress record), the samples written of the total, img/s, ETA."""
    parts = [f"running for {clock(seconds)}"]
    if latest and "samples_total" in latest:
        return ", ".join(parts + sampling_detail(latest))
    number = lambda k: latest.get(k) if latest and isinstance(latest.get(k), float) else None  # noqa: E731
    if number("step") is not None:
        parts.append(f"step {int(number('step')):,}")
    if number("img_per_sec") is not None:
        parts.append(f"{number('img_per_sec'):.3g} img/s")
    if number("eta_seconds") is not None:
        parts.append(f"ETA {clock(number('eta_seconds'))}")
    elif deadline_in is not None and deadline_in > 0:
        parts.append(f"deadline in {clock(deadline_in)}")
    return ", ".join(parts)


def budget_text(elapsed: float, budget: float) -> str:
    left = budget - elapsed
    if left >= 0:
        return f"{clock(elapsed)} elapsed, {clock(left)} of {clock(budget)} left"
    return f"{clock(elapsed)} elapsed, {clock(-left)} over the {clock(budget)} budget"


def format_progress(done: int, total: int, elapsed: float, budget: float, stage="", detail="") -> str:
    """One plain progress line: `3/19 stages, 2:05 elapsed, 14:55 of 17:00 left | RUN/STAGE: detail`."""
    text = f"{done}/{total} stages, {budget_text(elapsed, budget)}"
    if stage:
        text += f" | {stage}" + (f": {detail}" if detail else "")
    return text


class Progress:
    """The job's one progress display: stages done of the total, time elapsed and left of the
    budget, and the running stage's own progress. On a terminal (stderr) a tqdm bar, refreshed
    every `poll_seconds`; otherwise (a log file, CI) a `progress:` line on `stream` when a stage
    starts or ends, and at most every `interval` seconds while one runs. `clock` is time.time
    (tests pass their own)."""

    def __init__(self, total: int, budget_seconds: float, stream=None, tty=None, interval=30.0,
                 clock=time.time, bar_file=None):
        self.total, self.budget, self.interval, self.clock = total, budget_seconds, interval, clock
        self.stream = stream or sys.stdout
        self.bar_file = bar_file or sys.stderr
        self.done = 0
        self.started = clock()
        self._last_line = None
        tty = self.bar_file.isatty() if tty is None else tty
        self.poll_seconds = min(1.0, interval) if tty else interval
        self.bar = None
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=self.bar_file, unit="stage", dynamic_ncols=True,
                            bar_format="{n_fmt}/{total_fmt} stages |{bar:16}| {desc}")
            self._show("", "")

    def echo(self, text: str):
        """A line of the job's own output (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
            self.stream.flush()
        else:
            print(text, file=self.stream, flush=True)

    def _show(self, stage, detail, line=True):
        elapsed = self.clock() - self.started
        if self.bar is not None:
            self.bar.n = self.done
            text = budget_text(elapsed, self.budget) + (f" | {stage}" + (f": {detail}" if detail else "") if stage else "")
            self.bar.set_description_str(text, refresh=False)
            self.bar.refresh()
        elif line:
            print("progress: " + format_progress(self.done, self.total, elapsed, self.budget, stage, detail),
                  file=self.stream, flush=True)
            self._last_line = self.clock()

    def start(self, label: str):
        self._show(label, "started")

    def running(self, label: str, seconds: float, latest=None, deadline=None):
        due = self._last_line is None or self.clock() - self._last_line >= self.interval
        deadline_in = deadline - time.time() if deadline is not None else None
        self._show(label, stage_detail(seconds, latest, deadline_in), line=due)

    def finish(self, label: str, status: str):
        self.done = min(self.done + 1, self.total)
        self._show(label, status)

    def skip_to(self, done: int, label: str = "", why: str = ""):
        """Count stages that will not run (an earlier stage of their run failed) as done."""
        if done > self.done:
            self.done = min(done, self.total)
            self._show(label, why)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --- measurements -----------------------------------------------------------------------

def read_options(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "options.json")) as f:
        return json.load(f)


def read_quality(run_dir: str) -> list:
    """The rows of the run's quality probe (trainkit.loop.QUALITY_FILE), or [] without one."""
    from trainkit import logger, loop

    path = os.path.join(run_dir, loop.QUALITY_FILE)
    return logger.read_progress(path) if os.path.isfile(path) else []


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


# folders beside DATA_DIR/train that hold held-out real images, in order of preference
HELDOUT_SPLITS = ("test", "valid")
K_NEIGHBOURS = 3  # precision/recall's k


class Judging:
    """The comparison's feature space and reference images, set by the config.

    features: digits (the embedded digits CNN) or inception (pytorch-fid's Inception-v3: FID).
    reference: digits (the sklearn digits' train split at the samples' size) or train (a fixed
    random subset of `reference_size` images of the config's training folder). The reference's
    features are computed once per comparison and kept in `cache_dir`."""

    def __init__(self, features="digits", reference="digits", data_train="", reference_size=10000,
                 class_accuracy=True, inception_weights=None, cache_dir=None, heldout_dir=None, heldout_note=None):
        from . import metrics

        self.features, self.reference, self.data_train = features, reference, data_train
        self.reference_size, self.class_accuracy, self.cache_dir = reference_size, class_accuracy, cache_dir
        self.extractor = metrics.Extractor(features, inception_weights)
        # the held-out real images of a folder reference: DATA_DIR/test (else valid) beside train/
        if heldout_dir is None and data_train:
            parent = os.path.dirname(os.path.normpath(data_train))
            heldout_dir = next((os.path.join(parent, s) for s in HELDOUT_SPLITS
                                if os.path.isdir(os.path.join(parent, s))), None)
        self.heldout_dir, self.heldout_note = heldout_dir, heldout_note
        self._ref = {}

    @property
    def fd_name(self):
        return "FID" if self.features == "inception" else "FD-digits"

    def describe_reference(self):
        if self.reference == "digits":
            return "the real digits (train split)"
        n = min(self.reference_size, len(self._files())) if os.path.isdir(self.data_train) else self.reference_size
        return f"a fixed random {n:,} of the training images ({self.data_train})"

    def _files(self):
        from . import fid

        return fid.list_images(self.data_train)

    def reference_labels(self, size):
        """Class labels of the reference images, in reference_features' order, or None. A
        folder's come from openai's file names, CLASS_rest.png, numbered in sorted order of
        the class names as the training data loader numbers them."""
        key = ("labels", size if self.reference == "digits" else "train")
        if key not in self._ref:
            self._ref[key] = self._reference_labels(size)
        return self._ref[key]

    def _reference_labels(self, size):
        if self.reference == "digits":
            from . import digits_features

            return digits_features.digits_images("train", size)[1]
        import numpy as np

        names = [os.path.basename(f) for f in self._files()]
        index = self._class_index()
        if index is None:
            return None
        return np.array([index[names[i].split("_")[0]] for i in self._chosen(len(names))])

    def _class_index(self):
        """{class name: number} of the training folder's openai names (CLASS_rest.png), numbered
        in sorted order of the names as the training data loader numbers them; None without."""
        names = [os.path.basename(f) for f in self._files()]
        if not names or not all("_" in n for n in names):
            return None
        return {c: i for i, c in enumerate(sorted({n.split("_")[0] for n in names}))}

    # --- held-out real images: the reference row (verdict: "indistinguishable from held-out real data")

    def heldout(self, size):
        """(uint8 images, labels or None, description) of the held-out real images at `size`, or
        None when there are none: the digits' test split (datasets/digits.py's, never trained on)
        for the digits reference; else the data set's test (or valid) folder beside train/."""
        key = ("heldout", size)
        if key not in self._ref:
            self._ref[key] = self._heldout(size)
        return self._ref[key]

    def _heldout(self, size):
        if self.reference == "digits":
            from . import digits_features

            images, labels = digits_features.digits_images("test", size)
            return images, labels, (f"the digits' test split ({len(images):,} images, split off by datasets/digits.py "
                                    "and never trained on)")
        if not self.heldout_dir:
            return None
        import numpy as np

        from . import fid
        from .images_to_npz import read_image

        files = fid.list_images(self.heldout_dir)
        if len(files) <= K_NEIGHBOURS:  # precision/recall need more than k images
            return None
        train_shape = self.training_images().shape[1:]
        images = np.stack([read_image(f, train_shape[-1]) for f in files])
        if images.shape[1:] != train_shape or images.shape[1] != size:
            return None  # another size than the samples: not judged like them
        index = self._class_index()
        names = [os.path.basename(f).split("_")[0] for f in files]
        labels = np.array([index[c] for c in names]) if index and all(c in index for c in names) else None
        return images, labels, (self.heldout_note or f"{self.heldout_dir} ({len(images):,} images, a split the runs "
                                "never trained on)")

    def missing_heldout(self):
        """Why there is no real-data row, in words."""
        where = self.heldout_dir or os.path.dirname(os.path.normpath(self.data_train)) or "the data set"
        return (f"no held-out real images: {where} has no {' or '.join(HELDOUT_SPLITS)} split of the training "
                "images' size with more than 3 images, so no run is compared with real data")

    def judged_count(self, count, size):
        """How many of a row's `count` samples are judged: as many as there are held-out real
        images when fewer (FD's bias, and precision/recall's, move with n: every row and the real
        one are judged at one n), else all of them."""
        held = self.heldout(size)
        return min(count, len(held[0])) if held is not None else count

    def training_images(self, size=None):
        """The training images copies are looked for among, in reference_features' order: the
        digits' train split at `size`, or the training folder's chosen reference images."""
        if self.reference == "digits":
            from . import digits_features

            return digits_features.digits_images("train", size)[0]
        if "train_images" not in self._ref:
            import numpy as np
            from PIL import Image

            from .images_to_npz import read_image

            files = self._files()
            with Image.open(files[0]) as im:
                channels = 1 if im.mode in ("L", "1", "I;16", "I", "F") else 3
            self._ref["train_images"] = np.stack([read_image(files[i], channels) for i in self._chosen(len(files))])
        return self._ref["train_images"]

    def copy_limits(self, size):
        """copies.thresholds of the held-out images against the training images, or None."""
        key = ("copy_limits", size)
        if key not in self._ref:
            held = self.heldout(size)
            if held is None:
                self._ref[key] = None
            else:
                from . import copies

                self._ref[key] = copies.thresholds(held[0], self.extractor(held[0])[0], self.training_images(size),
                                                   self.reference_features(size))
        return self._ref[key]

    def _chosen(self, count):
        import numpy as np

        return sorted(np.random.default_rng(0).permutation(count)[: self.reference_size])

    def probe_flags(self, points, samples):
        """The training flags of the quality probe (evaluations.probe) against this judging's
        reference: the digits' train split (at the run's own image size), or the training
        folder's cached features."""
        if not points:
            return []
        flags = ["--probe_points", points, "--probe_samples", samples, "--probe_features", self.features]
        if self.reference == "digits":
            return flags + ["--probe_reference", "digits"]
        self.reference_features(None)  # computed (and cached) before the training that reads it
        flags += ["--probe_reference", self._cache_path(len(self._chosen(len(self._files()))), len(self._files()))]
        if self.extractor.weights:
            flags += ["--probe_inception_weights", self.extractor.weights]
        return flags

    def _cache_path(self, chosen, total):
        return os.path.join(self.cache_dir or self.data_train, "reference", f"{self.features}-{chosen}-of-{total}.npz")

    def reference_features(self, size):
        if self.reference == "digits":
            from . import digits_features

            if size not in self._ref:
                self._ref[size] = self.extractor(digits_features.digits_images("train", size)[0])[0]
            return self._ref[size]
        if "train" not in self._ref:
            self._ref["train"] = self._train_features()
        return self._ref["train"]

    def _train_features(self):
        import numpy as np
        from PIL import Image

        from .images_to_npz import read_image

        files = self._files()
        if not files:
            raise UserError(f"{self.data_train}: no images to judge against")
        chosen = self._chosen(len(files))
        cache = self._cache_path(len(chosen), len(files))
        if os.path.isfile(cache):
            with np.load(cache) as z:
                return z["features"]
        with Image.open(files[0]) as im:
            channels = 1 if im.mode in ("L", "1", "I;16", "I", "F") else 3
        images = np.stack([read_image(files[i], channels) for i in chosen])  # one size: the export's
        feats = self.extractor(images)[0]
        with fileio.atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, features=feats)
        return feats


def judge(npz_path: str, seed: int = 0, judging: Judging = None) -> dict:
    """FD (FD-digits, or FID with Inception features) with its bootstrap std, KID, precision/recall
    (k = 3) and the Inception Score formula on the feature network's classes, of a samples npz
    against the reference of `judging` (default: the real digits, train split, at the samples'
    size), and for labelled samples their per-class recall (class_recall with its std, its mean
    and minimum) and the digits-classifier accuracy when the judging asks for it; the copies of
    the training set (evaluations.copies). Judged on the first `judging.judged_count` samples (as
    many as there are held-out real images, the real row's n), the figures of all samples under
    `all_samples`. Also written to `<npz>.metrics.json`."""
    from . import metrics

    judging = judging or Judging()
    images, labels = npz.read_samples(npz_path)
    n = judging.judged_count(len(images), images.shape[1])
    out = judge_images(images[:n], None if labels is None else labels[:n], judging, seed,
                       pairs_path=os.path.join(os.path.dirname(npz_path), CLOSEST_PAIRS))
    out["num_drawn"] = int(len(images))
    if n < len(images):  # every sample drawn, for the record: not compared with rows of another n
        feats = judging.extractor(images)[0]
        m = metrics.evaluate_features(judging.reference_features(images.shape[1]), feats, None, ("fd", "pr"),
                                      seed=seed)
        out["all_samples"] = {"num_samples": int(len(images)), "fd_digits": m["fd"][0], "fd_std": m["fd"][1],
                              "precision": m["precision"], "recall": m["recall"]}
    fileio.write_text(npz_path + ".metrics.json", json.dumps(out, indent=2) + "\n")
    return out


def judge_images(images, labels, judging: Judging, seed: int = 0, pairs_path=None) -> dict:
    """judge's figures of uint8 images (and labels or None), all of them judged."""
    from . import copies, digits_features, metrics

    feats, logits = judging.extractor(images)
    size = images.shape[1]
    ref = judging.reference_features(size)
    m = metrics.evaluate_features(ref, feats, logits, splits=min(10, len(images)), seed=seed,
                                  kid_scale=judging.extractor.kid_scale)
    out = {"fd_digits": m["fd"][0], "fd_std": m["fd"][1], "kid": m["kid"][0], "kid_std": m["kid"][1],
           "precision": m["precision"], "recall": m["recall"], "is": m["is"][0], "is_std": m["is"][1],
           "precision_std": m["precision_std"], "recall_std": m["recall_std"], "num_samples": int(len(images))}
    if labels is not None:
        ref_labels = judging.reference_labels(size)
        if ref_labels is not None:
            # within-class collapse: one image per class passes the overall recall
            per_class = {c: r for c, r in metrics.class_recall(ref, ref_labels, feats, labels).items() if r is not None}
            if per_class:
                stds = metrics.class_recall_std(ref, ref_labels, feats, labels, seed=seed)
                worst = min(per_class, key=per_class.get)
                out.update(class_recall={str(c): r for c, r in per_class.items()},
                           class_recall_std={str(c): stds.get(c) for c in per_class},
                           class_recall_mean=float(sum(per_class.values()) / len(per_class)),
                           class_recall_min=per_class[worst], class_recall_min_class=worst)
    if labels is not None and judging.class_accuracy:
        out["class_accuracy"] = digits_features.accuracy(images, labels, digits_features.load_classifier())
    limits = judging.copy_limits(size)
    if limits is not None:
        out.update(copies.measure(images, feats, judging.training_images(size), ref, limits, pairs_path))
    return out


def judge_real(judging: Judging, size: int, n: int, out_dir: str, probe_samples=None) -> dict:
    """The real-data row: the held-out real images judged exactly like a run's samples, on a fixed
    random `n` of them (all when fewer), and the FD of a fixed `probe_samples` of them (the
    quality probe's n) for the "over training" figure's band; None without held-out images."""
    import numpy as np

    from . import metrics

    held = judging.heldout(size)
    if held is None:
        return None
    images, labels, description = held
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(images))[:n]) if n < len(images) else np.arange(len(images))
    os.makedirs(out_dir, exist_ok=True)
    row = judge_images(images[pick], None if labels is None else labels[pick], judging,
                       pairs_path=os.path.join(out_dir, CLOSEST_PAIRS))
    row.update(sampler="–", dir=out_dir, num_drawn=int(len(images)))
    real = {"name": REAL_NAME, "description": description, "dir": out_dir, "num_heldout": int(len(images)),
            "rows": [row], "fd_at": {}}
    if probe_samples and probe_samples <= len(images):
        sub = np.sort(rng.permutation(len(images))[:probe_samples])
        fd, std = metrics.fd_bootstrap(judging.reference_features(size), judging.extractor(images[sub])[0], 50, 0)
        real["fd_at"][str(probe_samples)] = [fd, std]
    fileio.write_text(os.path.join(out_dir, "metrics.json"), json.dumps(real, indent=2) + "\n")
    return real


# the closest (sample, training image) pairs beside a row's samples; not samples_*.npz, which
# find_samples takes for the samples
CLOSEST_PAIRS = "closest-training-images.npz"
REAL_NAME = report.REAL_NAME  # the real-data row's name in the report's tables


# --- the job ----------------------------------------------------------------------------

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


HOLDOUT_FRACTION = 0.1


def hold_out(data_train: str, out: str):
    """(training folder, held-out folder, description) for a data set without a test or valid
    split: a fixed random HOLDOUT_FRACTION of DATA_DIR/train (seed 0) is linked into
    <out>/data/heldout and the rest into <out>/data/train, which every run then trains on, so the
    held-out images are never trained on. A folder with subfolders, or too few images for a
    held-out part of more than 3, is left as it is: (data_train, None, None)."""
    import numpy as np

    from . import fid

    files = fid.list_images(data_train)
    n = int(round(len(files) * HOLDOUT_FRACTION))
    nested = any(e.is_dir() for e in os.scandir(data_train))
    if n <= K_NEIGHBOURS or nested:
        return data_train, None, None
    held = set(np.random.default_rng(0).permutation(len(files))[:n].tolist())
    root = os.path.join(out, "data")
    dirs = {"train": os.path.join(root, "train"), "heldout": os.path.join(root, "heldout")}
    for split, final in dirs.items():
        if os.path.isdir(final) and os.listdir(final):  # made by an earlier run of this comparison (--reuse)
            continue
        with fileio.atomic_dir(final, replace=True) as tmp:
            for i, f in enumerate(files):
                if (i in held) == (split == "heldout"):
                    os.symlink(os.path.abspath(f), os.path.join(tmp, os.path.basename(f)))
    note = (f"a fixed random {n:,} of the {len(files):,} images of {data_train} ({100 * HOLDOUT_FRACTION:g}%, seed 0; "
            f"the data set has no {' or '.join(HELDOUT_SPLITS)} split), held out: every run trained on the other "
            f"{len(files) - n:,} ({dirs['train']})")
    return dirs["train"], dirs["heldout"], note


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


def planned_stages(entry, baseline=True, control=True) -> int:
    """The jobs compare_run starts for `entry` when none fails: the progress display's total."""
    # a post-hoc sweep: the reconstruction, one sampling per σ_rel and the best one's full sampling
    sweep = 2 + len(entry["posthoc"]["sigma_rels"]) if entry.get("posthoc") else 0
    return ((2 if baseline else 0) + 1 + len(entry["samplers"]) + sweep
            + (len(CONTROL.get(entry["package"], [])) if control else 0))


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

    # A baseline trained for one step: what "untrained" scores. It uses the run's cheapest
    # sampler: the point is how far training moved the network, and a 100-step diffusion
    # sampler would spend minutes of the budget on noise.
    untrained_dir = os.path.join(base, "untrained")
    rec = train(untrained_dir, 0) if baseline else {"ok": False, "skipped": True}
    baseline, baseline_sampler = None, None
    if rec["ok"]:
        options = read_options(untrained_dir)
        cheapest = min(entry["samplers"], key=lambda s: network_evaluations(package, options, s["flags"]))
        baseline_sampler = cheapest["label"]
        result["baseline_nfe"] = network_evaluations(package, options, cheapest["flags"])
        srec = sample(untrained_dir, os.path.join(base, "untrained-samples"), cheapest["flags"])
        if srec["ok"]:
            result["untrained"] = judge(find_samples(os.path.join(base, "untrained-samples")), judging=judging)
            baseline = result["untrained"]["fd_digits"]
        else:
            result["failed"].append(("untrained samples", srec))
    elif not rec.get("skipped"):
        result["failed"].append(("untrained", rec))

    train_dir = os.path.join(base, "train")
    # quality over training: the probe's FD at evenly spaced points of the training's share
    probe_flags = (judging or Judging()).probe_flags(config.get("probe_points", 0), config.get("probe_samples", 200))
    rec = train(train_dir, train_seconds, *probe_flags)
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
        loss=options.get("loss"),  # gans' D loss kind
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
        row = {"sampler": label, "dir": stage_dir, "fd_untrained": baseline,
               "untrained_sampler": baseline_sampler,
               "nfe": network_evaluations(package, options, sampler["flags"])}
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
            row.update(judge(row["npz"], judging=judging))
            row["sample_seconds"] = srec["seconds"]
            row["sample_s_per_image"] = srec["seconds"] / row["num_samples"]
        else:
            row["error"] = srec.get("error")
            row["log"] = srec.get("log")
            result["failed"].append((f"samples {sampler['label']}", srec))
        result["rows"].append(row)
    if control:
        result["control"] = controllability(entry, train_dir, base, data_train, reuse, result["failed"], progress)
    return result


def drop_flag(flags: list, flag: str) -> list:
    """`flags` without `flag` and its value."""
    out, skip = [], False
    for a in flags:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


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
        import shutil

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
# dozen images), their flags from the flag file's INTERPOLATE_FLAGS / EDIT_FLAGS.
CONTROL = {
    "gans": [("interpolation", "gans.interpolate", "interpolation.png", [])],
    "ddgan": [("interpolation", "ddgan.interpolate", "interpolation.png", [])],
    "improved_diffusion": [("interpolation", "improved_diffusion.interpolate", "interpolation.png", []),
                           ("partial denoising", "improved_diffusion.edit", "edit.png", ["--images", "{data}"])],
}


def controllability(entry, train_dir, base, data_train, reuse, failed, progress=None) -> list:
    """[(what, png)] of the family's CONTROL stages run on the trained model; failures to `failed`."""
    shown = []
    for what, module, png_name, flags in CONTROL.get(entry["package"], []):
        stage_dir = os.path.join(base, module.rsplit(".", 1)[1])
        flags = [f.format(data=data_train) for f in flags]
        argv = run_sh("local", 1, entry["flag_file"], module, "--model_path", train_dir, "--logdir", stage_dir, *flags)
        rec = Stage(stage_dir, argv).run(reuse, progress)
        png = os.path.join(stage_dir, png_name)
        if rec["ok"] and os.path.isfile(png):
            shown.append((what, png))
        else:
            failed.append((what, rec if not rec["ok"] else {"error": f"{png}: not written"}))
    return shown


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
