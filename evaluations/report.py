"""The comparison report: `report.md` and a self-contained `report.html` (figures inlined).

Written by `evaluations.compare`: the results table (every number links to the run directory it
came from), the loss curves of each family (GAN losses with their spread, the stability picture
seeds 000 and 001 draw), sample grids side by side, and FD against sampling cost. Hardware,
sample counts and the feature network are stated under the table.
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

COLUMNS = [
    ("run", None), ("sampler", None), ("steps", "train"), ("train s", "train"), ("train img/s", "train"),
    ("parameters", "train"), ("samples", "sample"), ("NFE/img", "sample"), ("sampling s/img", "sample"),
    ("FD-digits", "sample"), ("FD std", "sample"), ("precision", "sample"), ("recall", "sample"),
    ("KID", "sample"), ("IS", "sample"), ("FD untrained", "untrained"), ("class acc.", "sample"),
    ("class recall mean / min", "sample"),
]


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


def table_rows(results: list, out: str, kid_factor=1) -> list:
    """One row per (run, sampler): list of (text, link or None) cells; KID times `kid_factor`
    (see `kid_column`)."""
    rows = []
    for r in results:
        rel = lambda p: os.path.relpath(p, out) if p else None  # noqa: E731
        train_dir = os.path.join(r["dir"], "train")
        untrained = os.path.join(r["dir"], "untrained-samples")
        samplers = r["rows"] or [{"sampler": "–"}]
        for row in samplers:
            cells = [(r["name"], rel(r["dir"])), (row["sampler"], rel(row.get("dir")))]
            if "error" in row:  # this sampler failed
                cells.append((f"FAILED (samples {row['sampler']}): {row['error']}", rel(row.get("log"))))
                rows.append(cells)
                continue
            if not r["rows"] and r["failed"]:  # the run failed before sampling
                what, rec = r["failed"][-1]
                cells.append((f"FAILED ({what}): {rec.get('error') or 'failed'}", rel(rec.get("log"))))
                rows.append(cells)
                continue
            cells += [
                (_fmt(r.get("steps"), "int"), rel(train_dir)),
                (_fmt(r.get("train_seconds")), rel(train_dir)),
                (_fmt(r.get("train_img_per_s")), rel(train_dir)),
                (_fmt(r.get("parameters"), "int"), rel(train_dir)),
                (_fmt(row.get("num_samples"), "int"), rel(row.get("npz"))),
                (_fmt(row.get("nfe"), "int"), rel(row.get("dir"))),
                (_fmt(row.get("sample_s_per_image")), rel(row.get("dir"))),
                (_fmt(row.get("fd_digits")), rel(row.get("npz"))),
                (_fmt(row.get("fd_std")), rel(row.get("npz"))),
                (_fmt(row.get("precision")), rel(row.get("npz"))),
                (_fmt(row.get("recall")), rel(row.get("npz"))),
                (_fmt(None if row.get("kid") is None else row["kid"] * kid_factor), rel(row.get("npz"))),
                (_fmt(row.get("is")), rel(row.get("npz"))),
                (_fmt(row.get("fd_untrained")), rel(untrained)),
                (_fmt(row.get("class_accuracy")), rel(row.get("npz"))),
                (_class_recall_cell(row), rel(row.get("npz"))),
            ]
            rows.append(cells)
    return rows


def summary_lines(results: list, fd_name: str = "FD-digits") -> list:
    """The job's closing text: a heading, then one line per run with its best row (lowest FD) as
    FD ± std, precision and recall, written as the table's cells write them; a run without a
    judged row shows its failure as the table does."""
    lines, labelled = [f"best row per run ({fd_name} ± std, precision, recall; lower {fd_name} is better):"], []
    for r in results:
        judged = [row for row in r["rows"] if row.get("fd_digits") is not None and math.isfinite(row["fd_digits"])]
        if judged:
            row = min(judged, key=lambda row: row["fd_digits"])
            label = r["name"] if row["sampler"] == "default" else f"{r['name']} ({row['sampler']})"
            text = (f"{fd_name} {_fmt(row['fd_digits'])} ± {_fmt(row.get('fd_std'))}, "
                    f"precision {_fmt(row.get('precision'))}, recall {_fmt(row.get('recall'))}")
        elif r["failed"]:
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


def quality_figure(results: list, path: str, fd_name: str = "FD-digits"):
    """FD of each run's quality probe (RUN/train/quality.csv) against training seconds and images
    seen, ±1 std error bars: quality over training, comparable across families."""
    runs = [(r, r["quality"]) for r in results if r.get("quality")]
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
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


def _save_figure(fig, path):
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


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


def write(out: str, results: list, meta: dict) -> dict:
    fig_dir = os.path.join(out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    losses = loss_figure(results, os.path.join(fig_dir, "losses.png"))
    fd_name = meta.get("fd_name", "FD-digits")
    reference = meta.get("reference", "the real digits (train split)")
    cost = cost_figure(results, os.path.join(fig_dir, "fd_vs_cost.png"), fd_name)
    quality = quality_figure(results, os.path.join(fig_dir, "fd_over_training.png"), fd_name)
    quality_note = _quality_note(results, fd_name, meta) if quality else ""
    grids = []
    for r in results:
        for row in r["rows"]:
            if row.get("npz"):
                label = r["name"] if row["sampler"] == "default" else f"{r['name']} ({row['sampler']})"
                grids.append((label, grid_png(row["npz"], os.path.join(fig_dir, f"grid-{r['name']}-{row['sampler']}.png"))))
    pictures = seed_pictures(out, results, losses, meta)
    kid_name, kid_factor = kid_column(fd_name)
    rows = table_rows(results, out, kid_factor)
    header = [{"FD-digits": fd_name, "KID": kid_name}.get(c, c) for c, _ in COLUMNS]
    is_source = meta.get("is_source", "the digits classifier's 10-way predictions (at most 10)")
    under = [
        f"Hardware: {meta['machine']}, {meta['cpu_cores']} cores, {meta['device']}; torch {meta['torch']}, "
        f"Python {meta['python']}; every job ran as {meta['launcher']}.",
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
        f"{is_source}. FD untrained: the network after one training step, sampled "
        f"with its run's cheapest sampler. Conditional grids hold one row per class, the class at the left.",
        f"Train s and img/s: wall time of the training job (process start included) and images seen per second "
        f"over it; sampling s/img: wall time of the sampling job over the sample count. NFE/img: network "
        f"evaluations per image. Budget {meta['minutes']:g} min ({meta['config']}); the whole job took "
        f"{meta['wall_seconds'] / 60:.1f} min.",
    ]

    from .verdict import verdict

    findings = verdict(results, fd_name, meta.get("data_name", "the real digits"))
    md = ["# Comparison report", "", "## Verdict", ""] + [f"- {f}" for f in findings] + [
        "", "## Results", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        md.append("| " + " | ".join(_md_cell(t, l) for t, l in cells) + " |")
    md += [""] + under + [""]
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    if losses:
        md += ["## Loss curves", "", f"![losses]({rel(losses)})", ""]
    if grids:
        md += ["## Samples", ""] + [f"**{label}**\n\n![{label}]({rel(p)})\n" for label, p in grids]
    if quality:
        md += [f"## {fd_name} over training", "", f"![quality over training]({rel(quality)})", "", quality_note, ""]
    if cost:
        md += ["## FD against sampling cost", "", f"![cost]({rel(cost)})", ""]
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
        "table{border-collapse:collapse;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}a{color:#0645ad;text-decoration:none}"
        "img{max-width:100%}.grids{display:flex;flex-wrap:wrap;gap:18px}.grids figure{margin:0}.grids img{image-rendering:pixelated}"
        "figcaption{font-size:13px;text-align:center}.note{font-size:13px;color:#555;max-width:1100px}"
        "td.failed{color:#b00;text-align:left}"
    )
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>Comparison report</title><style>{style}</style></head><body>",
         "<h1>Comparison report</h1><h2>Verdict</h2><ul>" + "".join(f"<li>{_md_inline(f)}</li>" for f in findings)
         + "</ul><h2>Results</h2><table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"]
    for cells in rows:
        if len(cells) == 3:  # a failed run: one wide cell
            h.append(f"<tr><td>{_html_cell(*cells[0])}</td><td>{_html_cell(*cells[1])}</td>"
                     f"<td class='failed' colspan='{len(header) - 2}'>{_html_cell(*cells[2])}</td></tr>")
        else:
            h.append("<tr>" + "".join(f"<td>{_html_cell(t, l)}</td>" for t, l in cells) + "</tr>")
    h.append("</table>" + "".join(f"<p class='note'>{html.escape(u)}</p>" for u in under))
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

NUMERIC = ["steps", "train s", "train img/s", "parameters", "samples", "NFE/img", "sampling s/img", "FD-digits",
           "FD std", "precision", "recall", "KID", "IS", "FD untrained"]


FD_NAMES = ("FD-digits", "FID")
KID_NAMES = ("KID", "KID ×10³")


def read_table(md_text: str) -> list:
    """The results table of a report.md as a list of {column: text} (links stripped)."""
    import re

    lines = [l for l in md_text.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for l in lines[2:]:
        cells = [re.sub(r"^\[(.*)\]\(.*\)$", r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", l.strip().strip("|"))]
        rows.append(dict(zip(header, cells)))
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
    # a comparison run with --no_baseline has no untrained column anywhere: that is not a gap
    skipped = {"FD untrained"} if rows and all(r.get("FD untrained") == "–" for r in rows) else set()
    for r in rows:
        for col in NUMERIC:
            if col in skipped:
                continue
            if col == "FD-digits" and col not in r:
                col = next((c for c in FD_NAMES if c in r), col)  # the config's feature space names it
            if col == "KID" and col not in r:
                col = next((c for c in KID_NAMES if c in r), col)  # shown ×10³ for Inception
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
