"""The main job's configuration: a shell file (flags/compare/*.sh) sourced in bash, its
variables read back and checked into one dict: the data, the budget, the judging, and the runs
(RUNS: name, flag file, package, share, train flags, samplers), with their post-hoc EMA sweeps
(POSTHOC_EMA) and pictures (PICTURES). A bad config stops with one line naming the file."""

import re
import shlex

from trainkit import flagfile, resources
from trainkit.errors import UserError

CONFIG_KEYS = ("DATA_DIR", "DATA_PREP", "DATA_ROOT", "DATA_NEEDS", "NPROC", "MINUTES", "TRAIN_FRACTION", "NUM_SAMPLES",
               "SAMPLE_BATCH", "RUNS", "FEATURES", "REFERENCE", "REFERENCE_SIZE", "CLASS_ACCURACY", "PICTURES",
               "LOSS_PICTURE", "PROBE_POINTS", "PROBE_SAMPLES", "POSTHOC_EMA", "POSTHOC_SAMPLES", "GUIDANCE_FLAG",
               "INTERPOLATE_FLAGS", "EDIT_FLAGS")

# The control stages a flag file can ask for (C8's convention): its variable, the entry point
# `<package>.<role>` that runs it, the picture that entry point writes into its --logdir, and the
# report's name for it. A family has the stage when its flag file sets the variable to some flags.
CONTROL_ROLES = (("INTERPOLATE_FLAGS", "interpolate", "interpolation.png", "interpolation"),
                 ("EDIT_FLAGS", "edit", "edit.png", "partial denoising"))


def control_stages(flag_file: str) -> list:
    """[(role, picture, what)] of the control stages the flag file asks for (CONTROL_ROLES): those
    whose variable it sets to some flags."""
    found = flagfile.read_vars(resources.find(flag_file, "flag file"), [v for v, *_ in CONTROL_ROLES])
    return [(role, png, what) for var, role, png, what in CONTROL_ROLES if found[var].strip()]


def read_config(path: str) -> dict:
    """Source the shell config in bash and read its variables back (it stays plain shell)."""
    source = resources.find(path, "comparison config")  # as given, else the shipped copy
    values = flagfile.read_vars(source, CONFIG_KEYS, what="config")
    try:
        config = {
            "data_dir": values.get("DATA_DIR", ""),
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
            # extra flags of every control stage of a role, after the flag file's ({data}: the
            # folder the runs trained on), e.g. the edit's --images
            "control_flags": {role: shlex.split(values.get(var, "")) for var, role, *_ in CONTROL_ROLES},
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

