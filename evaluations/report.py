"""The comparison report: `report.md` and a self-contained `report.html` (figures inlined).

Written by `evaluations.compare`: the verdict; the results table, held-out real data's row first
(plain numbers and one link per row, to the run, in report.md; a link on every number in
report.html), with the real-data row's source, the equal-n rule and the resolving power under it;
a second table of cost and hardware; the per-class recall of conditional rows beside real
data's; the training-stability table; the closest sample/training-image pairs (copies); the loss
curves of each family (GAN losses with their spread, the stability picture seeds 000 and 001
draw), sample grids side by side, FD over training with real data's band, and FD against
sampling cost.
"""

import base64
import html
import math
import os
import platform

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from evaluations import digits_features  # noqa: E402
from trainkit import fileio, logger, npz  # noqa: E402

# The results table: what a row's samples scored, plain numbers, one link per row (to the run) in
# report.md; every cell keeps its link in report.html. Cost and hardware go to COST_COLUMNS' table.
COLUMNS = [
    ("run", None), ("sampler", None), ("samples", "sample"), ("FD-digits", "sample"), ("FD std", "sample"),
    ("precision", "sample"), ("recall", "sample"), ("KID", "sample"), ("IS", "sample"), ("class acc.", "sample"),
    ("copies", "sample"), ("FD untrained", "untrained"),
]
COST_COLUMNS = ["run", "sampler", "steps", "train s", "train img/s", "parameters", "samples drawn", "NFE/img",
                "sampling s/img"]


def environment(launcher: str, nproc: int) -> dict:
    env = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only",
        "launcher": f"{launcher} x {nproc}",
    }
    try:
        from . import digits_features

        acc = digits_features.test_accuracy()
        env["feature_network"] = "digits CNN, 64-d penultimate features; test accuracy " + ", ".join(
            f"{acc[s]:.3f} at {s} px" for s in sorted(acc))
    except Exception as e:  # the report must still be written if the metric network cannot load
        env["feature_network"] = f"digits CNN (accuracy unavailable: {e})"
    return env


def _fmt(v, kind=None):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if kind == "int":
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _class_recall_cell(row) -> str:
    if row.get("class_recall_mean") is None:
        return "–"
    return f"{row['class_recall_mean']:.3f} / {row['class_recall_min']:.3f} (class {row['class_recall_min_class']})"


def kid_column(fd_name: str):
    """(header, factor) of the KID column: Inception KID (an FID comparison) is shown ×10³, the
    field's convention; the digits space's KID (on features divided by their RMS,
    digits_features.FEATURE_RMS) as it is. The rows keep the MMD² itself."""
    return ("KID ×10³", 1000) if fd_name == "FID" else ("KID", 1)


def table_rows(results: list, out: str, kid_factor=1, real=None) -> list:
    """One row per (run, sampler), the held-out real data's first when there is one: list of
    (text, link or None) cells in COLUMNS' order; KID times `kid_factor` (see `kid_column`)."""
    rel = lambda p: os.path.relpath(p, out) if p else None  # noqa: E731
    rows = []
    for r in ([real] if real else []) + list(results):
        untrained = os.path.join(r["dir"], "untrained-samples")
        samplers = r["rows"] or [{"sampler": "–"}]
        for row in samplers:
            cells = [(r["name"], rel(r["dir"])), (row["sampler"], rel(row.get("dir")))]
            failed = _failure(r, row, rel)
            if failed:
                rows.append(cells + [failed])
                continue
            link = rel(row.get("npz") or row.get("dir"))
            cells += [
                (_fmt(row.get("num_samples"), "int"), link),
                (_fmt(row.get("fd_digits")), link),
                (_fmt(row.get("fd_std")), link),
                (_fmt(row.get("precision")), link),
                (_fmt(row.get("recall")), link),
                (_fmt(None if row.get("kid") is None else row["kid"] * kid_factor), link),
                (_fmt(row.get("is")), link),
                (_fmt(row.get("class_accuracy")), link),
                (_fmt(row.get("copies")), link),
                (_fmt(row.get("fd_untrained")), rel(untrained) if r is not real else None),
            ]
            rows.append(cells)
    return rows


def _failure(r, row, rel):
    """The one wide cell of a failed sampler or a run that failed before sampling, else None."""
    if "error" in row:  # this sampler failed
        return (f"FAILED (samples {row['sampler']}): {row['error']}", rel(row.get("log")))
    if not r["rows"] and r.get("failed"):  # the run failed before sampling
        what, rec = r["failed"][-1]
        return (f"FAILED ({what}): {rec.get('error') or 'failed'}", rel(rec.get("log")))
    return None


def cost_rows(results: list, out: str) -> list:
    """The second table: training and sampling cost of each (run, sampler), COST_COLUMNS' order;
    failed rows are in the results table only."""
    rel = lambda p: os.path.relpath(p, out) if p else None  # noqa: E731
    rows = []
    for r in results:
        train_dir = os.path.join(r["dir"], "train")
        for row in r["rows"]:
            if _failure(r, row, rel):
                continue
            rows.append([(r["name"], rel(r["dir"])), (row["sampler"], rel(row.get("dir"))),
                         (_fmt(r.get("steps"), "int"), rel(train_dir)),
                         (_fmt(r.get("train_seconds")), rel(train_dir)),
                         (_fmt(r.get("train_img_per_s")), rel(train_dir)),
                         (_fmt(r.get("parameters"), "int"), rel(train_dir)),
                         (_fmt(row.get("num_drawn", row.get("num_samples")), "int"), rel(row.get("npz"))),
                         (_fmt(row.get("nfe"), "int"), rel(row.get("dir"))),
                         (_fmt(row.get("sample_s_per_image")), rel(row.get("dir")))])
    return rows


def class_table(results: list, real=None):
    """(header, rows) of the per-class recall table of the class-conditional rows: class, real
    data's recall of that class, each row's (±1 std; "collapsed" by the verdict's rule); None
    without a conditional row."""
    from .verdict import _label, collapsed_classes

    cond = [(_label(r, row), row) for r in results for row in r["rows"] if row.get("class_recall")]
    if not cond:
        return None
    real_row = real["rows"][0] if real and real.get("rows") and real["rows"][0].get("class_recall") else None
    classes = sorted({int(c) for _, row in cond for c in row["class_recall"]}
                     | ({int(c) for c in real_row["class_recall"]} if real_row else set()))

    def cell(row, c, bad=()):
        v = row.get("class_recall", {}).get(str(c))
        if v is None:
            return "–"
        std = (row.get("class_recall_std") or {}).get(str(c))
        return f"{v:.3f}" + (f" ± {std:.2g}" if std is not None else "") + (" (collapsed)" if c in bad else "")

    header = ["class"] + (["held-out real data"] if real_row else []) + [label for label, _ in cond]
    bad = {label: {c for c, _, _ in collapsed_classes(row, real_row)} if real_row else set() for label, row in cond}
    rows = [[str(c)] + ([cell(real_row, c)] if real_row else []) + [cell(row, c, bad[label]) for label, row in cond]
            for c in classes]
    return header, rows


def summary_lines(results: list, fd_name: str = "FD-digits", real=None) -> list:
    """The job's closing text: a heading, then one line per run with its best row (lowest FD) as
    FD ± std, precision and recall, written as the table's cells write them; a run without a
    judged row shows its failure as the table does. Held-out real data (`real`) comes first."""
    lines, labelled = [f"best row per run ({fd_name} ± std, precision, recall; lower {fd_name} is better):"], []
    for r in ([real] if real else []) + list(results):
        judged = [row for row in r["rows"] if row.get("fd_digits") is not None and math.isfinite(row["fd_digits"])]
        if judged:
            row = min(judged, key=lambda row: row["fd_digits"])
            label = r["name"] if row["sampler"] in ("default", "–") else f"{r['name']} ({row['sampler']})"
            text = (f"{fd_name} {_fmt(row['fd_digits'])} ± {_fmt(row.get('fd_std'))}, "
                    f"precision {_fmt(row.get('precision'))}, recall {_fmt(row.get('recall'))}")
        elif r.get("failed"):
            what, rec = r["failed"][-1]
            label, text = r["name"], f"FAILED ({what}): {rec.get('error') or 'failed'}"
        else:
            label, text = r["name"], "no judged samples"
        labelled.append((label, text))
    width = max((len(label) for label, _ in labelled), default=0)
    return lines + [f"  {label + ':':<{width + 1}} {text}" for label, text in labelled]


# --- figures ----------------------------------------------------------------------------

def _loss_columns(rows: list) -> list:
    keys = sorted({k for row in rows for k in row})
    return [k for k in keys if ("loss" in k.lower() or k.lower().startswith("err")) and "_q" not in k]


def loss_figure(results: list, path: str):
    with_progress = [r for r in results if r.get("progress") and os.path.exists(r["progress"])]
    if not with_progress:
        return None
    fig, axes = plt.subplots(1, len(with_progress), figsize=(4.2 * len(with_progress), 3.2), squeeze=False)
    for ax, r in zip(axes[0], with_progress):
        rows = logger.read_progress(r["progress"])
        steps = np.array([row.get("step", i) for i, row in enumerate(rows)], dtype=float)
        for key in _loss_columns(rows):
            ys = np.array([row.get(key, np.nan) for row in rows], dtype=float)
            ok = np.isfinite(ys)
            if ok.sum() < 1:
                continue
            # a short run's one or two rows would draw no visible line: mark its points
            ax.plot(steps[ok], ys[ok], label=key, lw=1.2, marker="o" if ok.sum() < 3 else None, ms=4)
            if ok.sum() >= 5:  # spread over a sliding window: the stability picture
                window = max(3, ok.sum() // 15)
                s = np.array([ys[ok][max(0, i - window): i + 1].std() for i in range(ok.sum())])
                ax.fill_between(steps[ok], ys[ok] - s, ys[ok] + s, alpha=0.2)
        ax.set_title(r["name"])
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def grid_png(npz_path: str, path: str, count: int = 64, scale: int = 3):
    """A square grid of the first samples; labelled samples get one row per class instead."""
    from .grid import grid_image

    images, labels = npz.read_samples(npz_path)
    if labels is not None:
        return class_grid_png(images, labels, path, scale=scale)
    nrow = int(math.sqrt(min(count, len(images))))
    g = grid_image(images[: nrow * nrow], nrow=nrow)
    img = Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with fileio.atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def class_grid_png(images, labels, path: str, per_class: int = 8, scale: int = 3, margin: int = 28):
    """One row per class (the first `per_class` samples of each), the class written at the left."""
    from PIL import ImageDraw

    from .grid import grid_image

    classes = sorted(set(int(c) for c in labels))
    h, w = images.shape[1:3]
    pad = 2
    cell_h, width = (h + pad) * scale, ((w + pad) * per_class + pad) * scale
    canvas = Image.new("L" if images.shape[3] == 1 else "RGB", (margin + width, len(classes) * cell_h + pad * scale), 255)
    draw = ImageDraw.Draw(canvas)
    for i, c in enumerate(classes):
        row = images[labels == c][:per_class]
        if len(row) < per_class:  # a short class keeps its row length: blank cells
            row = np.concatenate([row, np.zeros((per_class - len(row),) + row.shape[1:], row.dtype)])
        g = grid_image(row, nrow=per_class, padding=pad)
        strip = Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g)
        strip = strip.resize((strip.width * scale, strip.height * scale), Image.NEAREST)
        canvas.paste(strip, (margin, i * cell_h))
        draw.text((6, i * cell_h + cell_h // 2 - 6), str(c), fill=0)
    with fileio.atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def cost_figure(results: list, path: str, fd_name: str = "FD-digits"):
    points = [(r, row) for r in results for row in r["rows"] if row.get("fd_digits") is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    # one line per sampler of a run: labels "dpmpp_2m-10", "dpmpp_2m-20" are one sampler at two NFEs
    lines = {}
    for r, row in points:
        lines.setdefault((r["name"], row["sampler"].rsplit("-", 1)[0]), []).append(row)
    for (name, sampler), rows in lines.items():
        if len(rows) > 1:
            rows = sorted(rows, key=lambda row: row["nfe"])
            ax.plot([row["nfe"] for row in rows], [row["fd_digits"] for row in rows], lw=1, alpha=0.7,
                    label=f"{name} {sampler}")
    for r, row in points:
        label = r["name"] if row["sampler"] == "default" else f"{r['name']} ({row['sampler']})"
        ax.scatter(row["nfe"], row["fd_digits"], s=40, zorder=3)
        ax.annotate(label, (row["nfe"], row["fd_digits"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    for r in results:  # one hollow point per run: its untrained baseline
        fd = next((row.get("fd_untrained") for row in r["rows"] if row.get("fd_untrained") is not None), None)
        if fd is not None:
            ax.scatter(r.get("baseline_nfe", 1), fd, s=40, facecolors="none", edgecolors="gray", zorder=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image (sampling cost)")
    ax.set_ylabel(f"{fd_name} (lower is better)")
    ax.set_title("quality vs sampling cost (hollow: untrained)")
    if any(len(rows) > 1 for rows in lines.values()):
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def quality_figure(results: list, path: str, fd_name: str = "FD-digits", real=None):
    """FD of each run's quality probe (RUN/train/quality.csv) against training seconds and images
    seen, ±1 std error bars: quality over training, comparable across families. Held-out real
    data's FD at the probe's n (real["fd_at"]) is drawn as a band, ±1 std: the floor."""
    runs = [(r, r["quality"]) for r in results if r.get("quality")]
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    band = (real or {}).get("fd_at", {}).get(str(int(runs[0][1][0]["num_samples"])))
    if band:
        fd, std = band
        for ax in axes:
            ax.axhspan(max(fd - std, 1e-3), fd + std, color="0.6", alpha=0.35, lw=0,
                       label=f"held-out real data, ±1 std ({fd:.3g} ± {std:.2g})")
            ax.axhline(fd, color="0.4", lw=1)
    for r, rows in runs:
        fd = [q["fd"] for q in rows]
        std = [q["fd_std"] for q in rows]
        for ax, key in zip(axes, ("train_seconds", "samples")):
            ax.errorbar([q[key] for q in rows], fd, yerr=std, marker="o", ms=4, capsize=3, lw=1, label=r["name"])
    axes[0].set_xlabel("training seconds (probes left out)")
    axes[1].set_xlabel("images seen")
    axes[0].set_ylabel(f"{fd_name}, {int(runs[0][1][0]['num_samples'])} samples (lower is better)")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[1].set_xscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{fd_name} over training (fixed noise, each run's cheapest sampler)", fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def copies_figure(results: list, path: str, real=None, scale: int = 3):
    """For each judged row (held-out real data first): its copies.PAIRS samples closest to a
    training image in pixels (top strip) above those training images (bottom strip), with the
    row's name and the closest distance. None when no row has its pairs."""
    from PIL import ImageDraw

    from .grid import grid_image
    from .verdict import _label

    rows = [(_label(r, row), row) for r in ([real] if real else []) + list(results) for row in r["rows"]
            if row.get("closest_pairs") and os.path.isfile(row["closest_pairs"])]
    if not rows:
        return None
    strips, pad, caption = [], 2, 14 * scale // 3 + 4
    for label, row in rows:
        with np.load(row["closest_pairs"]) as z:
            pair = np.concatenate([z["samples"], z["train"]])
            per = len(z["samples"])
            text = f"{label}: closest {z['distance'][0]:.3f}, copies {row.get('copies', float('nan')):.3f}"
        g = grid_image(pair, nrow=per, padding=pad)
        img = Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g).convert("RGB")
        strips.append((text, img.resize((img.width * scale, img.height * scale), Image.NEAREST)))
    width = max(max(im.width for _, im in strips), 420)
    canvas = Image.new("RGB", (width, sum(im.height + caption for _, im in strips)), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for text, im in strips:
        draw.text((4, y + 2), text, fill=(0, 0, 0))
        canvas.paste(im, (0, y + caption))
        y += im.height + caption
    with fileio.atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


COPIES_NOTE = ("For each row, the samples closest to a training image in pixels (top) above that training image "
               "(bottom); held-out real data first, whose closest pairs are how near a fresh draw of the data comes "
               "by chance. The copies column is the share of the row's samples closer to their nearest training "
               "image than {q} of held-out real images are to theirs (an RMS pixel distance of {limit}); held-out "
               "data scores about {p} by construction.")


QUALITY_NOTE = ("Each run's training measured the {fd} of {n} samples (the same noise every time, the family's "
                "cheapest sampler: gans and DDGAN their only one, improved diffusion DDIM at 10 steps) at {k} evenly "
                "spaced points of its time budget, the last at its end; error bars: ±1 std over 50 bootstrap "
                "resamples.{bias} The probes cost {cost} of training time.")


PICTURES_NOTE = ("The pictures the reference project publishes, under its file names: each model's sample grid "
                 "(a conditional model's with one row per class) and one figure of every model's loss curves.")


def seed_pictures(out: str, results: list, losses, meta: dict) -> list:
    """[(what, path)] of the config's PICTURES, copied from the report's figures to <out>/results/
    under the reference project's names; a run without samples has no picture and is left out."""
    wanted = meta.get("pictures") or []
    if not wanted and not meta.get("loss_picture"):
        return []
    import shutil

    res_dir = os.path.join(out, "results")
    os.makedirs(res_dir, exist_ok=True)
    by_run = {}
    for r in results:
        for row in r["rows"]:
            if row.get("npz"):
                by_run.setdefault(r["name"], {})[row["sampler"]] = os.path.join(
                    out, "figures", f"grid-{r['name']}-{row['sampler']}.png")
    shown = []
    for name, filename, sampler in wanted:
        grids_of_run = by_run.get(name, {})
        src = grids_of_run.get(sampler) if sampler else next(iter(grids_of_run.values()), None)
        if src and os.path.isfile(src):
            dst = os.path.join(res_dir, filename)
            with fileio.atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            shown.append((f"{name} samples" + (f" ({sampler})" if sampler else ""), dst))
    if meta.get("loss_picture") and losses:
        dst = os.path.join(res_dir, meta["loss_picture"])
        with fileio.atomic_path(dst) as tmp:
            shutil.copyfile(losses, tmp)
        shown.append(("loss curves of every model", dst))
    return shown


def _scaled_copy(src, dst, scale=3):
    """The PNG `src` enlarged `scale` times (nearest neighbour: 16 px digits stay readable) at `dst`."""
    img = Image.open(src)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with fileio.atomic_path(dst) as tmp:
        img.save(tmp, format="PNG")
    return dst


# the measures a guidance or post-hoc EMA figure draws, one panel each: (key, label, std key)
TRADE_OFF = [("fd_digits", None, "fd_std"), ("precision", "precision", "precision_std"),
             ("recall", "recall", "recall_std"), ("class_accuracy", "class accuracy", None)]


def _trade_off_figure(curves: list, path: str, xlabel: str, title: str, fd_name: str, best=None):
    """One panel per TRADE_OFF measure (class accuracy only when some curve has it), each curve
    [(x, row)] drawn against x with ±1 std error bars where the row has them; `best` {curve label:
    x} rings the chosen point."""
    keys = [k for k in TRADE_OFF if any(k[0] in row for _, points in curves for _, row in points)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.1 * len(keys), 3.0), squeeze=False)
    for ax, (key, name, std_key) in zip(axes[0], keys):
        for label, points in curves:
            points = sorted((x, row) for x, row in points if row.get(key) is not None)
            if not points:
                continue
            xs = [x for x, _ in points]
            ys = [row[key] for _, row in points]
            err = [row.get(std_key) or 0 for _, row in points] if std_key else None
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, lw=1, label=label)
            if best and label in best:
                for x, row in points:
                    if x == best[label]:
                        ax.scatter([x], [row[key]], s=120, facecolors="none", edgecolors="k", zorder=4)
        ax.set_xlabel(xlabel)
        ax.set_title(name or f"{fd_name} (lower is better)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)
    return path


def guidance_curves(results: list) -> list:
    """[(label, [(guidance scale, row)])]: the rows of a run that differ only in their guidance
    scale (compare's `guidance_curve`), when there are at least two scales."""
    curves = []
    for r in results:
        groups = {}
        for row in r["rows"]:
            if row.get("guidance_scale") is not None and row.get("fd_digits") is not None:
                groups.setdefault(row.get("guidance_curve", ""), []).append(row)
        for key, rows in groups.items():
            if len({row["guidance_scale"] for row in rows}) >= 2:
                label = r["name"] if len(groups) == 1 else f"{r['name']} ({', '.join(row['sampler'] for row in rows)})"
                curves.append((label, [(row["guidance_scale"], row) for row in rows]))
    return curves


def guidance_figure(results: list, path: str, fd_name: str = "FD-digits"):
    """FD, precision, recall and class accuracy against the guidance scale (1: the conditional
    model itself), one curve per run and sampler; None without two scales of one sampler."""
    curves = guidance_curves(results)
    if not curves:
        return None
    n = {row.get("num_samples") for _, points in curves for _, row in points}
    return _trade_off_figure(curves, path, "guidance scale w (1: no guidance)",
                             f"classifier-free guidance: quality against w ({'/'.join(map(str, sorted(n)))} samples)",
                             fd_name)


def posthoc_figure(results: list, path: str, fd_name: str = "FD-digits"):
    """Each post-hoc EMA sweep's σ_rel against FD, precision, recall (and class accuracy), on
    its probe-sized sample set; the σ_rel chosen for the full sampling ringed. None without a
    sweep of two σ_rel."""
    sweeps = [(r["name"], r["posthoc"]) for r in results if len((r.get("posthoc") or {}).get("rows", [])) >= 2]
    if not sweeps:
        return None
    curves = [(name, [(row["sigma_rel"], row) for row in sweep["rows"]]) for name, sweep in sweeps]
    best = {name: sweep.get("best") for name, sweep in sweeps}
    n = {sweep["samples"] for _, sweep in sweeps}
    return _trade_off_figure(curves, path, "σ_rel of the post-hoc EMA",
                             f"post-hoc EMA sweep ({'/'.join(map(str, sorted(n)))} samples each; ringed: chosen)",
                             fd_name, best)


def posthoc_notes(results: list, fd_name: str = "FD-digits") -> list:
    """One sentence per run with a post-hoc sweep: which σ_rel it chose and how that average's
    full row compares with the row of the training's own sampling weights (same sampler)."""
    notes = []
    for r in results:
        sweep = r.get("posthoc")
        if not sweep:
            continue
        if sweep.get("note") or sweep.get("best") is None:
            notes.append(f"{r['name']}: {sweep.get('note') or 'the post-hoc EMA sweep judged no σ_rel'}.")
            continue
        tried = ", ".join(f"{row['sigma_rel']:g} ({row['fd_digits']:.3g})" for row in sweep["rows"])
        text = (f"{r['name']}: the post-hoc EMA sweep ({sweep['samples']} samples each, sampler {sweep['sampler']}; "
                f"σ_rel ({fd_name}) {tried}) chose σ_rel {sweep['best']:g}, used for the full sampling")
        phema = next((row for row in r["rows"] if row.get("sigma_rel") is not None and row.get("fd_digits") is not None),
                     None)
        fixed = next((row for row in r["rows"] if row["sampler"] == sweep["sampler"] and row.get("fd_digits") is not None),
                     None)
        if phema and fixed:
            text += (f": row {phema['sampler']} scores {fd_name} {phema['fd_digits']:.3g} ± {phema['fd_std']:.2g} against "
                     f"{fixed['fd_digits']:.3g} ± {fixed['fd_std']:.2g} for the training's own sampling weights "
                     f"(row {fixed['sampler']})")
        notes.append(text + ".")
    return notes


def _save_figure(fig, path):
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


GUIDANCE_NOTE = (
    "Each curve: one run's rows that differ only in the guidance scale w (uncond + w (cond - uncond); 1 is the "
    "conditional model, 0 the unconditional one), judged like every row. Guidance trades diversity for "
    "fidelity: class accuracy and precision rise with w, recall falls. A guided network evaluation costs two.")
POSTHOC_NOTE = (
    "Post-hoc EMA (Karras et al. 2024): the training tracked power-function averages (--ema_std) and saved "
    "snapshots of them; trainkit.posthoc_ema reconstructed each σ_rel above from them (least squares), each was "
    "sampled on the probe-sized set and judged, and the lowest FD's σ_rel was sampled like every row (its row "
    "is labelled phema<σ_rel>). The other rows use the training's own sampling weights (its fixed-rate or "
    "half-life average).")

CONTROL_NOTE = (
    "Interpolation: each row goes from one seed's sample to the next seed's (slerp in the latent: z for the "
    "GANs; x_T and, in a second row, z for DDGAN; x_T decoded by a deterministic ODE sampler for improved "
    "diffusion). Partial denoising (SDEdit): the top row is the input, then one row per t0 (noised to t0 and "
    "denoised back): low t0 keeps the input, t0 = 1 forgets it.")


# --- documents --------------------------------------------------------------------------

def _md_cell(text, link):
    text = str(text).replace("|", "\\|")
    return f"[{text}]({link})" if link else text


def _html_cell(text, link):
    t = html.escape(str(text))
    return f'<a href="{html.escape(link)}">{t}</a>' if link else t


def _md_inline(text):
    """The verdict's markdown (only **bold**) as HTML."""
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def _data_uri(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _quality_note(results, fd_name, meta):
    runs = [r for r in results if r.get("quality")]
    first = runs[0]["quality"]
    cost = ", ".join(f"{r['name']} {sum(q['probe_seconds'] for q in r['quality']):.1f} s" for r in runs)
    n, m = int(first[0]["num_samples"]), meta.get("num_samples")
    bias = ""
    if m and n != m:  # FD's bias falls as 1/n
        bias = (f" {n} samples give a {'larger' if n < m else 'smaller'} {fd_name} than the table's {m} (its bias "
                "falls as 1/n), so compare the curves with each other, not with the table.")
    return QUALITY_NOTE.format(fd=fd_name, n=n, k=max(len(r["quality"]) for r in runs), bias=bias, cost=cost)


def _md_table(header, rows, first_link_only=True):
    """A markdown table of (text, link) cells: the run's link on its first cell only, plain numbers."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        cells = [c if isinstance(c, tuple) else (c, None) for c in cells]
        lines.append("| " + " | ".join(_md_cell(t, l if i == 0 or not first_link_only else None)
                                       for i, (t, l) in enumerate(cells)) + " |")
    return lines


def _html_table(header, rows):
    h = ["<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"]
    for cells in rows:
        cells = [c if isinstance(c, tuple) else (c, None) for c in cells]
        if len(cells) == 3 and len(header) > 3:  # a failed run: one wide cell
            h.append(f"<tr><td>{_html_cell(*cells[0])}</td><td>{_html_cell(*cells[1])}</td>"
                     f"<td class='failed' colspan='{len(header) - 2}'>{_html_cell(*cells[2])}</td></tr>")
        else:
            h.append("<tr>" + "".join(f"<td>{_html_cell(t, l)}</td>" for t, l in cells) + "</tr>")
    return "".join(h) + "</table>"


def _real_note(real, meta, fd_name):
    """The lines under the results table that say what the real-data row is and what this n resolves."""
    from .verdict import COLLAPSE_FRACTION, resolving_power

    if not real:
        return [f"Held-out real data: {meta.get('heldout') or 'none'}."]
    row = real["rows"][0]
    n, drawn = row["num_samples"], meta.get("num_samples")
    text = (f"Held-out real data: {real['description']}, judged exactly like a run's samples (same reference, "
            f"features and metrics) on {'a fixed random ' if n < real['num_heldout'] else ''}{n:,} of them. ")
    if drawn and n < drawn:
        text += (f"Every row is judged on its first {n:,} samples of the {drawn:,} drawn (seeds 0..{n - 1}), the "
                 f"held-out count: {fd_name}'s bias falls as 1/n (precision and recall move with n too), so rows are "
                 f"compared with real data only at one n; the figures of all {drawn:,} are in each "
                 "`<samples>.npz.metrics.json` under `all_samples`. ")
    delta = resolving_power(row)
    if delta is not None:
        text += (f"Resolving power: two rows are told apart when they differ by more than the sum of their std; "
                 f"held-out real data's {fd_name} std at n = {n:,} is {row['fd_std']:.2g}, so {fd_name} differences "
                 f"below about {delta:.2g} (twice it) are not separated at this n. ")
    text += (f"Collapse: recall below {COLLAPSE_FRACTION:g} of held-out real data's (per class, of its recall of "
             "that class), beyond the error bars.")
    return [text]


def write(out: str, results: list, meta: dict) -> dict:
    fig_dir = os.path.join(out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    real = meta.get("real")
    losses = loss_figure(results, os.path.join(fig_dir, "losses.png"))
    fd_name = meta.get("fd_name", "FD-digits")
    reference = meta.get("reference", "the real digits (train split)")
    cost = cost_figure(results, os.path.join(fig_dir, "fd_vs_cost.png"), fd_name)
    quality = quality_figure(results, os.path.join(fig_dir, "fd_over_training.png"), fd_name, real)
    quality_note = _quality_note(results, fd_name, meta) if quality else ""
    guidance_png = guidance_figure(results, os.path.join(fig_dir, "guidance.png"), fd_name)
    posthoc_png = posthoc_figure(results, os.path.join(fig_dir, "posthoc_ema.png"), fd_name)
    posthoc_text = posthoc_notes(results, fd_name)
    copies_png = copies_figure(results, os.path.join(fig_dir, "closest_training_images.png"), real)
    copies_note = ""
    if copies_png and real:
        limit = real["rows"][0].get("copy_threshold", {})
        copies_note = COPIES_NOTE.format(q=f"{100 * (1 - limit.get('quantile', 0.05)):.0f}%",
                                         limit=f"{limit.get('pixels', float('nan')):.3g}",
                                         p=f"{limit.get('quantile', 0.05):g}")
    grids = []
    for r in results:
        for row in r["rows"]:
            if row.get("npz"):
                label = r["name"] if row["sampler"] == "default" else f"{r['name']} ({row['sampler']})"
                grids.append((label, grid_png(row["npz"], os.path.join(fig_dir, f"grid-{r['name']}-{row['sampler']}.png"))))
    pictures = seed_pictures(out, results, losses, meta)
    kid_name, kid_factor = kid_column(fd_name)
    rows = table_rows(results, out, kid_factor, real)
    header = [{"FD-digits": fd_name, "KID": kid_name}.get(c, c) for c, _ in COLUMNS]
    costs = cost_rows(results, out)
    classes = class_table(results, real)
    from .verdict import stability_table, verdict

    stability = stability_table(results)
    is_source = meta.get("is_source", "the digits classifier's 10-way predictions (at most 10)")
    under = _real_note(real, meta, fd_name) + [
        f"Samples: {meta['num_samples']} per family and sampler, seeds 0..{meta['num_samples'] - 1} (one generator per "
        f"sample index). {fd_name}: Fréchet distance to {reference} in the feature space of the "
        f"{meta['feature_network']}; FD std: its std over 50 bootstrap resamples of the samples. "
        f"Precision and recall: improved precision and recall (Kynkäänniemi et al. 2019, k = 3) in the same space: the "
        f"share of samples inside the real images' manifold (fidelity) and of real images inside the samples' "
        f"(diversity; a collapsed model has recall near 0); their std is the spread over 50 random halves of the "
        f"samples (a half's spread is about the whole set's std), and the verdict's ties use it. "
        f"{kid_name}: unbiased MMD² with the cubic polynomial kernel (x·y/d + 1)³ in the same space"
        + (", times 1000 (the usual KID ×10³)" if kid_factor == 1000 else
           " on the features divided by their RMS coordinate over the real digits "
           f"(a constant, {digits_features.FEATURE_RMS:g}, measured on the train split at 16 px), so that x·y/d is of order 1")
        + ", mean over 100 subsets. IS: Inception-Score formula on "
        f"{is_source}. Copies: the share of samples closer to a training image (in pixels) than held-out real "
        "images usually are (see the figure). FD untrained: the network after one training step, sampled "
        f"with its run's cheapest sampler. Conditional grids hold one row per class, the class at the left.",
    ]
    cost_note = [
        f"Hardware: {meta['machine']}, {meta['cpu_cores']} cores, {meta['device']}; torch {meta['torch']}, "
        f"Python {meta['python']}; every job ran as {meta['launcher']}.",
        f"Train s and img/s: wall time of the training job (process start included) and images seen per second "
        f"over it; sampling s/img: wall time of the sampling job over the samples drawn. NFE/img: network "
        f"evaluations per image. Budget {meta['minutes']:g} min ({meta['config']}); the whole job took "
        f"{meta['wall_seconds'] / 60:.1f} min.",
    ]

    findings = verdict(results, fd_name, meta.get("data_name", "the real digits"), real)
    md = ["# Comparison report", "", "## Verdict", ""] + [f"- {f}" for f in findings] + [
        "", "## Results", ""] + _md_table(header, rows) + [""] + under + [""]
    md += ["### Cost and hardware", ""] + _md_table(COST_COLUMNS, costs) + [""] + cost_note + [""]
    if classes:
        md += ["### Recall per class", "", "Each class's samples against the reference's images of that class "
               "(±1 std over random halves of the samples)."
               + (" Collapsed: below the verdict's fraction of held-out real data's recall of the class, beyond the "
                  "error bars." if real else ""), ""] + _md_table(*classes, first_link_only=False) + [""]
    if stability:
        md += ["### Training stability", "", f"{fd_name} of the quality probe's fixed samples at each point (±1 std, "
               "at the training second), how it ends (the last two points within their error bars: level), and each "
               "GAN's discriminator accuracy over the second half of its log.", ""] + _md_table(*stability) + [""]
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    if copies_png:
        md += ["## Copies of the training set", "", f"![closest training images]({rel(copies_png)})", "",
               copies_note, ""]
    if losses:
        md += ["## Loss curves", "", f"![losses]({rel(losses)})", ""]
    if grids:
        md += ["## Samples", ""] + [f"**{label}**\n\n![{label}]({rel(p)})\n" for label, p in grids]
    if quality:
        md += [f"## {fd_name} over training", "", f"![quality over training]({rel(quality)})", "", quality_note, ""]
    if cost:
        md += ["## FD against sampling cost", "", f"![cost]({rel(cost)})", ""]
    if guidance_png:
        md += ["## Classifier-free guidance", "", f"![guidance]({rel(guidance_png)})", "", GUIDANCE_NOTE, ""]
    if posthoc_png or posthoc_text:
        md += ["## Post-hoc EMA", ""] + ([f"![post-hoc EMA]({rel(posthoc_png)})", ""] if posthoc_png else [])
        md += [f"- {t}" for t in posthoc_text] + ["", POSTHOC_NOTE, ""]
    if pictures:
        md += ["## The reference project's pictures", "", PICTURES_NOTE, ""]
        md += [f"- [{rel(p)}]({rel(p)}): {what}" for what, p in pictures] + [""]
    control = [(f"{r['name']}: {what}",
                _scaled_copy(p, os.path.join(fig_dir, f"control-{r['name']}-{os.path.basename(p)}")))
               for r in results for what, p in r.get("control", []) if os.path.isfile(p)]
    if control:
        md += ["## Controllability", "", CONTROL_NOTE, ""] + [f"**{label}**\n\n![{label}]({rel(p)})\n"
                                                            for label, p in control]
    md_path = os.path.join(out, "report.md")
    fileio.write_text(md_path, "\n".join(md) + "\n")

    style = (
        "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}"
        "table{border-collapse:collapse;font-size:14px;margin:0.5em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}a{color:#0645ad;text-decoration:none}"
        "img{max-width:100%}.grids{display:flex;flex-wrap:wrap;gap:18px}.grids figure{margin:0}.grids img{image-rendering:pixelated}"
        "figcaption{font-size:13px;text-align:center}.note{font-size:13px;color:#555;max-width:1100px}"
        "td.failed{color:#b00;text-align:left}"
    )
    note = lambda lines: "".join(f"<p class='note'>{_md_inline(u)}</p>" for u in lines)  # noqa: E731
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>Comparison report</title><style>{style}</style></head><body>",
         "<h1>Comparison report</h1><h2>Verdict</h2><ul>" + "".join(f"<li>{_md_inline(f)}</li>" for f in findings)
         + "</ul><h2>Results</h2>" + _html_table(header, rows) + note(under)
         + "<h3>Cost and hardware</h3>" + _html_table(COST_COLUMNS, costs) + note(cost_note)]
    if classes:
        h.append("<h3>Recall per class</h3>" + _html_table(*classes))
    if stability:
        h.append("<h3>Training stability</h3>" + _html_table(*stability))
    if copies_png:
        h.append(f"<h2>Copies of the training set</h2><img src='{_data_uri(copies_png)}' alt='closest training "
                 f"images' style='image-rendering:pixelated'><p class='note'>{html.escape(copies_note)}</p>")
    if losses:
        h.append(f"<h2>Loss curves</h2><img src='{_data_uri(losses)}' alt='loss curves'>")
    if grids:
        h.append("<h2>Samples</h2><div class='grids'>" + "".join(
            f"<figure><img src='{_data_uri(p)}' alt='{html.escape(label)}'><figcaption>{html.escape(label)}</figcaption></figure>"
            for label, p in grids) + "</div>")
    if quality:
        h.append(f"<h2>{html.escape(fd_name)} over training</h2><img src='{_data_uri(quality)}' alt='quality over "
                 f"training'><p class='note'>{html.escape(quality_note)}</p>")
    if cost:
        h.append(f"<h2>FD against sampling cost</h2><img src='{_data_uri(cost)}' alt='FD vs cost'>")
    if guidance_png:
        h.append(f"<h2>Classifier-free guidance</h2><img src='{_data_uri(guidance_png)}' alt='guidance'>"
                 f"<p class='note'>{html.escape(GUIDANCE_NOTE)}</p>")
    if posthoc_png or posthoc_text:
        h.append("<h2>Post-hoc EMA</h2>" + (f"<img src='{_data_uri(posthoc_png)}' alt='post-hoc EMA'>" if posthoc_png
                                            else "") + "<ul>" + "".join(f"<li>{_md_inline(t)}</li>" for t in posthoc_text)
                 + f"</ul><p class='note'>{html.escape(POSTHOC_NOTE)}</p>")
    if control:
        h.append(f"<h2>Controllability</h2><p class='note'>{html.escape(CONTROL_NOTE)}</p><div class='grids'>" + "".join(
            f"<figure><img src='{_data_uri(p)}' alt='{html.escape(label)}'><figcaption>{html.escape(label)}</figcaption></figure>"
            for label, p in control) + "</div>")
    if pictures:
        h.append(f"<h2>The reference project's pictures</h2><p class='note'>{html.escape(PICTURES_NOTE)}</p><ul>" + "".join(
            f"<li><a href='{html.escape(rel(p))}'>{html.escape(rel(p))}</a>: {html.escape(what)}</li>"
            for what, p in pictures) + "</ul>")
    h.append("</body></html>")
    html_path = os.path.join(out, "report.html")
    fileio.write_text(html_path, "\n".join(h) + "\n")
    return {"md": md_path, "html": html_path}


# --- checking a written report (CI, tests) ----------------------------------------------

NUMERIC = ["samples", "FD-digits", "FD std", "precision", "recall", "KID", "IS", "FD untrained", "steps", "train s",
           "train img/s", "parameters", "samples drawn", "NFE/img", "sampling s/img"]
# columns that a whole comparison may lack: no baselines (--no_baseline), no held-out real data
OPTIONAL = ("FD untrained", "copies")
# the real-data row has no training, sampler or baseline
REAL_NAME = "held-out real data"


FD_NAMES = ("FD-digits", "FID")
KID_NAMES = ("KID", "KID ×10³")


def _tables(md_text: str) -> dict:
    """{heading: [row lines]} of the tables that follow the ## / ### headings of a report.md."""
    tables, heading = {}, ""
    for line in md_text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|"):
            tables.setdefault(heading, []).append(line)
    return tables


def _parse(lines: list) -> list:
    import re

    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for l in lines[2:]:
        cells = [re.sub(r"^\[(.*)\]\(.*\)$", r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", l.strip().strip("|"))]
        rows.append(dict(zip(header, cells)))
    return rows


def read_table(md_text: str) -> list:
    """The results table of a report.md as a list of {column: text} (links stripped), each row
    with its cost-and-hardware columns merged in (matched by run and sampler)."""
    tables = _tables(md_text)
    results = tables.get("Results") or next(iter(tables.values()))
    rows = _parse(results)
    if "Cost and hardware" in tables:
        cost = {(r.get("run"), r.get("sampler")): r for r in _parse(tables["Cost and hardware"])}
        for r in rows:
            r.update({k: v for k, v in cost.get((r.get("run"), r.get("sampler")), {}).items() if k not in r})
    return rows


def check(out: str, runs=None) -> list:
    """Problems with the report in `out`: missing runs, failed or non-finite cells, missing images."""
    import re

    md_path = os.path.join(out, "report.md")
    if not os.path.exists(md_path):
        return [f"{md_path}: no report"]
    with open(md_path) as f:
        md = f.read()
    rows = read_table(md)
    problems = []
    names = {r.get("run") for r in rows}
    for name in sorted(set(runs or []) - names):
        problems.append(f"no row for run {name}")
    runs_rows = [r for r in rows if r.get("run") != REAL_NAME]
    # a comparison run with --no_baseline has no untrained column anywhere, one without held-out
    # real data no copies: that is not a gap
    skipped = {c for c in OPTIONAL if runs_rows and all(r.get(c, "–") == "–" for r in runs_rows)}
    for r in rows:
        real = r.get("run") == REAL_NAME
        for col in NUMERIC + ["copies"]:
            if col in skipped or (real and col not in r):
                continue  # the real row: no training, sampler or baseline
            if col == "FD-digits" and col not in r:
                col = next((c for c in FD_NAMES if c in r), col)  # the config's feature space names it
            if col == "KID" and col not in r:
                col = next((c for c in KID_NAMES if c in r), col)  # shown ×10³ for Inception
            if real and col == "FD untrained":
                continue
            try:
                ok = math.isfinite(float(r.get(col, "").replace(",", "")))
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"run {r.get('run')} ({r.get('sampler')}): {col} is {r.get(col, '')!r}")
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        if not os.path.isfile(os.path.join(out, image)):
            problems.append(f"image {image} does not exist")
    return problems


def create_parser():
    from trainkit import run

    p = run.ArgumentParser(description="Check a comparison report: a row per run, finite numbers, images present.")
    p.add_argument("--check", required=True, metavar="DIR", help="the comparison's run directory")
    p.add_argument("--runs", default="", help="comma-separated run names that must have a row (empty: none required)")
    return p


def main(argv=None):
    import sys

    a = create_parser().parse_args(argv)
    problems = check(a.check, [r for r in a.runs.split(",") if r])
    for line in problems:
        print(f"evaluations.report: {line}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{a.check}/report.md: every row complete, every image present")


if __name__ == "__main__":
    main()
