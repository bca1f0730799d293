"""The comparison report's figures, each written as a PNG under the report's folder: loss curves,
sample grids, FD against sampling cost, FD over training, the closest training images, the
guidance and post-hoc EMA trade-offs, the controllability pictures and the reference project's
pictures. Each function returns its path, or None when the results have nothing to draw.
"""

import json
import math
import os
import shutil

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw

from trainkit import fileio, logger, npz

from .grid import grid_image
from .verdict import _label


def _save_figure(fig, path):
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _declared_loss_keys(r):
    """The loss keys the run's Task declared (trainkit.loop.Task.loss_keys; the loop writes them
    into the training's options.json, which compare copies into the result), or None for a run
    directory from before the declaration."""
    if r.get("loss_keys") is not None:  # compare records None for a run from before the declaration
        return tuple(r["loss_keys"])
    path = os.path.join(os.path.dirname(r["progress"]), "options.json")
    try:
        with open(path) as f:
            options = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(options, dict) or "loss_keys" not in options:
        return None
    return tuple(options.get("loss_keys") or ())


def loss_keys(r, rows: list) -> list:
    """The progress columns drawn in run `r`'s loss panel: the loss keys its Task declared (its
    discriminator keys are more than losses: accuracy, R1, gradient norms), those that were
    logged, in declared order. An old run directory without the declaration keeps the rule from
    before it: columns named like a loss ("loss" in the name, or DDGAN's errD/errG by their
    prefix), not the quantile columns ("_q")."""
    logged = {k for row in rows for k in row}
    declared = _declared_loss_keys(r)
    if declared is not None:
        return [k for k in dict.fromkeys(declared) if k in logged]
    return [k for k in sorted(logged) if ("loss" in k.lower() or k.lower().startswith("err")) and "_q" not in k]


def loss_figure(results: list, path: str):
    with_progress = [r for r in results if r.get("progress") and os.path.exists(r["progress"])]
    if not with_progress:
        return None
    fig, axes = plt.subplots(1, len(with_progress), figsize=(4.2 * len(with_progress), 3.2), squeeze=False)
    for ax, r in zip(axes[0], with_progress):
        rows = logger.read_progress(r["progress"])
        steps = np.array([row.get("step", i) for i, row in enumerate(rows)], dtype=float)
        for key in loss_keys(r, rows):
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
    classes = sorted(set(int(c) for c in labels))
    h, w = images.shape[1:3]
    pad = 2
    cell_h, width = (h + pad) * scale, ((w + pad) * per_class + pad) * scale
    mode = "L" if images.shape[3] == 1 else "RGB"
    canvas = Image.new(mode, (margin + width, len(classes) * cell_h + pad * scale), 255)
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
    # a row whose sampler wrote no info json has no known cost (nfe None): it has no place here
    points = [(r, row) for r in results for row in r["rows"]
              if row.get("fd_digits") is not None and row.get("nfe") is not None]
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
        if fd is not None and r.get("baseline_nfe", 1) is not None:
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


def seed_pictures(out: str, results: list, losses, meta: dict) -> list:
    """[(what, path)] of the config's PICTURES, copied from the report's figures to <out>/results/
    under the reference project's names; a run without samples has no picture and is left out."""
    wanted = meta.get("pictures") or []
    if not wanted and not meta.get("loss_picture"):
        return []
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
        for i, (label, points) in enumerate(curves):
            points = sorted((x, row) for x, row in points if row.get(key) is not None)
            if not points:
                continue
            xs = [x for x, _ in points]
            ys = [row[key] for _, row in points]
            err = [row.get(std_key) or 0 for _, row in points] if std_key else None
            # a curve's colour is its place in `curves`, in every panel: a panel that some curves
            # skip (class accuracy: the conditional runs only) must not recolour the rest
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, lw=1, label=label, color=f"C{i % 10}")
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




def sample_grids(results: list, fig_dir: str) -> list:
    """[(label, path)]: one grid per row with samples, figures/grid-<run>-<sampler>.png."""
    grids = []
    for r in results:
        for row in r["rows"]:
            if row.get("npz"):
                label = r["name"] if row["sampler"] == "default" else f"{r['name']} ({row['sampler']})"
                path = os.path.join(fig_dir, f"grid-{r['name']}-{row['sampler']}.png")
                grids.append((label, grid_png(row["npz"], path)))
    return grids


def control_pictures(results: list, fig_dir: str) -> list:
    """[(label, path)]: each run's controllability pictures (interpolation, editing), enlarged
    into figures/control-<run>-<file>."""
    return [(f"{r['name']}: {what}",
             _scaled_copy(p, os.path.join(fig_dir, f"control-{r['name']}-{os.path.basename(p)}")))
            for r in results for what, p in r.get("control", []) if os.path.isfile(p)]
