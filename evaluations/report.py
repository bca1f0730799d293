"""The comparison report: decides what `report.md` and `report.html` say, as one list of sections.

Written by `evaluations.compare`: the verdict; the results table, held-out real data's row first
(plain numbers and one link per row, to the run, in report.md; a link on every number in
report.html), with the real-data row's source, the equal-n rule and the resolving power under it;
a second table of cost and hardware; the per-class recall of conditional rows beside real
data's; the training-stability table; the closest sample/training-image pairs (copies); the loss
curves of each run (the losses its Task declares, with their spread), sample grids side by side,
FD over training with real data's band, and FD against sampling cost.

The tables are built in evaluations.report_tables, the figures drawn in
evaluations.report_figures, both documents written from the sections by
evaluations.report_render; `python -m evaluations.report --check DIR` is
evaluations.report_check. The method notes name no family: what a sampler did comes from its
samples' info json (trainkit.npz.read_sample_info).
"""

import os
import platform

import torch

from trainkit import fileio, npz

from . import digits_features
from .report_check import REAL_NAME, check, create_parser, main, read_table
from .report_figures import (
    control_pictures,
    copies_figure,
    cost_figure,
    guidance_curves,
    guidance_figure,
    loss_figure,
    posthoc_figure,
    quality_figure,
    sample_grids,
    seed_pictures,
)
from .report_render import Bullets, Figure, Gallery, Links, Notes, Section, Table, html_document, markdown
from .report_tables import (
    COLUMNS,
    COST_COLUMNS,
    _class_recall_cell,
    _fmt,
    class_table,
    cost_rows,
    kid_column,
    summary_lines,
    table_rows,
)
from .stability import stability_table
from .verdict import COLLAPSE_FRACTION, resolving_power, verdict

# what compare, CI and the tests use; the --check tool, tables and figures live in their modules
__all__ = ["write", "sections", "environment", "summary_lines", "table_rows", "class_table", "quality_figure",
           "guidance_curves", "check", "read_table", "REAL_NAME", "COLUMNS", "create_parser", "main",
           "_fmt", "_class_recall_cell"]

TITLE = "Comparison report"


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


def sample_info(npz_path):
    """What the sampler of `npz_path` wrote beside it (C4: sampler, network_evaluations, ...),
    or None: samples from an older sampler, or an unreadable info file (the report is still
    written; compare has already said what it could not read)."""
    if not npz_path:
        return None
    try:
        return npz.read_sample_info(npz_path)
    except Exception:
        return None


def _sampler_text(row) -> str:
    """A row's sampler as its samples' info json names it, with its network evaluations per image."""
    info = sample_info(row.get("npz")) or {}
    name = info.get("sampler") or row.get("sampler")
    nfe = info.get("network_evaluations", row.get("nfe"))
    if nfe is None:
        return str(name)
    return f"{name}, {nfe} network evaluation{'' if nfe == 1 else 's'} per image"


def _probe_samplers(results) -> str:
    """Each probed run's cheapest sampled row, from its info json: the sampler its probe uses."""
    parts = []
    for r in results:
        rows = [row for row in r["rows"] if row.get("npz")]
        if r.get("quality") and rows:
            cheapest = min(rows, key=lambda row: (sample_info(row["npz"]) or {}).get(
                "network_evaluations", row.get("nfe") if row.get("nfe") is not None else float("inf")))
            parts.append(f"{r['name']}: {_sampler_text(cheapest)}")
    return "; ".join(parts)


COPIES_NOTE = ("For each row, the samples closest to a training image in pixels (top) above that training image "
               "(bottom); held-out real data first, whose closest pairs are how near a fresh draw of the data comes "
               "by chance. The copies column is the share of the row's samples closer to their nearest training "
               "image than {q} of held-out real images are to theirs (an RMS pixel distance of {limit}); held-out "
               "data scores about {p} by construction.")


QUALITY_NOTE = ("Each run's training measured the {fd} of {n} samples (the same noise every time, the family's "
                "cheapest sampler{samplers}) at {k} evenly "
                "spaced points of its time budget, the last at its end; error bars: ±1 std over 50 bootstrap "
                "resamples.{bias} The probes cost {cost} of training time.")


PICTURES_NOTE = ("The pictures the reference project publishes, under its file names: each model's sample grid "
                 "(a conditional model's with one row per class) and one figure of every model's loss curves.")

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
        judged = [row for row in r["rows"] if row.get("fd_digits") is not None]
        phema = next((row for row in judged if row.get("sigma_rel") is not None), None)
        fixed = next((row for row in judged if row["sampler"] == sweep["sampler"]), None)
        if phema and fixed:
            text += (f": row {phema['sampler']} scores {fd_name} {phema['fd_digits']:.3g} ± {phema['fd_std']:.2g} "
                     f"against {fixed['fd_digits']:.3g} ± {fixed['fd_std']:.2g} for the training's own sampling "
                     f"weights (row {fixed['sampler']})")
        notes.append(text + ".")
    return notes


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

# what each family's `<family>.interpolate` / `.edit` entry point draws (their docstrings say
# which of the family's noise inputs it interpolates): the note describes the pictures, not a family
CONTROL_NOTE = (
    "Interpolation: each row goes from one seed's sample to the next seed's (slerp between the two seeds' noise "
    "inputs, each family's own, sampled deterministically so that only the noise changes along the row). "
    "Partial denoising (SDEdit): the top row is the input, then one row per t0 (noised to t0 and "
    "denoised back): low t0 keeps the input, t0 = 1 forgets it.")


def _quality_note(results, fd_name, meta):
    runs = [r for r in results if r.get("quality")]
    first = runs[0]["quality"]
    cost = ", ".join(f"{r['name']} {sum(q['probe_seconds'] for q in r['quality']):.1f} s" for r in runs)
    n, m = int(first[0]["num_samples"]), meta.get("num_samples")
    bias = ""
    if m and n != m:  # FD's bias falls as 1/n
        bias = (f" {n} samples give a {'larger' if n < m else 'smaller'} {fd_name} than the table's {m} (its bias "
                "falls as 1/n), so compare the curves with each other, not with the table.")
    samplers = _probe_samplers(results)
    return QUALITY_NOTE.format(fd=fd_name, n=n, k=max(len(r["quality"]) for r in runs), bias=bias, cost=cost,
                               samplers=f" ({samplers})" if samplers else "")


def _real_note(real, meta, fd_name):
    """The lines under the results table that say what the real-data row is and what this n resolves."""
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



def _results_notes(meta, fd_name, kid_name, kid_factor, real, reference) -> list:
    """The lines under the results table: the real-data row, then how every column is measured."""
    is_source = meta.get("is_source", "the digits classifier's 10-way predictions (at most 10)")
    return _real_note(real, meta, fd_name) + [
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
           f"(a constant, {digits_features.FEATURE_RMS:g}, measured on the train split at 16 px), "
           "so that x·y/d is of order 1")
        + ", mean over 100 subsets. IS: Inception-Score formula on "
        f"{is_source}. Copies: the share of samples closer to a training image (in pixels) than held-out real "
        "images usually are (see the figure). FD untrained: the network after one training step, sampled "
        f"with its run's cheapest sampler. Conditional grids hold one row per class, the class at the left.",
    ]


def _cost_notes(meta) -> list:
    return [
        f"Hardware: {meta['machine']}, {meta['cpu_cores']} cores, {meta['device']}; torch {meta['torch']}, "
        f"Python {meta['python']}; every job ran as {meta['launcher']}.",
        f"Train s and img/s: wall time of the training job (process start included) and images seen per second "
        f"over it; sampling s/img: wall time of the sampling job over the samples drawn. NFE/img: network "
        f"evaluations per image, as each sampler recorded it beside its samples. Budget {meta['minutes']:g} min "
        f"({meta['config']}); the whole job took {meta['wall_seconds'] / 60:.1f} min.",
    ]


def _copies_note(real) -> str:
    limit = real["rows"][0].get("copy_threshold", {})
    return COPIES_NOTE.format(q=f"{100 * (1 - limit.get('quantile', 0.05)):.0f}%",
                              limit=f"{limit.get('pixels', float('nan')):.3g}", p=f"{limit.get('quantile', 0.05):g}")


def sections(out: str, results: list, meta: dict) -> list:
    """The report as a list of Sections, its figures drawn into <out>/figures/ on the way."""
    fig_dir = os.path.join(out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    real = meta.get("real")
    fd_name = meta.get("fd_name", "FD-digits")
    reference = meta.get("reference", "the real digits (train split)")
    kid_name, kid_factor = kid_column(fd_name)
    header = [{"FD-digits": fd_name, "KID": kid_name}.get(c, c) for c, _ in COLUMNS]

    losses = loss_figure(results, os.path.join(fig_dir, "losses.png"))
    cost = cost_figure(results, os.path.join(fig_dir, "fd_vs_cost.png"), fd_name)
    quality = quality_figure(results, os.path.join(fig_dir, "fd_over_training.png"), fd_name, real)
    guidance_png = guidance_figure(results, os.path.join(fig_dir, "guidance.png"), fd_name)
    posthoc_png = posthoc_figure(results, os.path.join(fig_dir, "posthoc_ema.png"), fd_name)
    posthoc_text = posthoc_notes(results, fd_name)
    copies_png = copies_figure(results, os.path.join(fig_dir, "closest_training_images.png"), real)
    grids = sample_grids(results, fig_dir)
    pictures = seed_pictures(out, results, losses, meta)
    control = control_pictures(results, fig_dir)
    classes = class_table(results, real)
    stability = stability_table(results)

    doc = [
        Section("Verdict", [Bullets(verdict(results, fd_name, meta.get("data_name", "the real digits"), real))]),
        Section("Results", [Table(header, table_rows(results, out, kid_factor, real)),
                            Notes(_results_notes(meta, fd_name, kid_name, kid_factor, real, reference))]),
        Section("Cost and hardware", [Table(COST_COLUMNS, cost_rows(results, out)), Notes(_cost_notes(meta))], level=3),
    ]
    if classes:
        intro = ("Each class's samples against the reference's images of that class (±1 std over random halves of "
                 "the samples)." + (" Collapsed: below the verdict's fraction of held-out real data's recall of the "
                                    "class, beyond the error bars." if real else ""))
        doc.append(Section("Recall per class", [Notes([intro]), Table(*classes, first_link_only=False)], level=3))
    if stability:
        intro = (f"{fd_name} of the quality probe's fixed samples at each point (±1 std, at the training second), how "
                 "it ends (the last two points within their error bars: level), and each GAN's discriminator accuracy "
                 "over the second half of its log.")
        doc.append(Section("Training stability", [Notes([intro]), Table(*stability)], level=3))
    if copies_png:
        doc.append(Section("Copies of the training set", [Figure(copies_png, "closest training images", pixelated=True),
                                                          Notes([_copies_note(real) if real else ""])]))
    if losses:
        doc.append(Section("Loss curves", [Figure(losses, "losses")]))
    if grids:
        doc.append(Section("Samples", [Gallery(grids)]))
    if quality:
        doc.append(Section(f"{fd_name} over training", [Figure(quality, "quality over training"),
                                                         Notes([_quality_note(results, fd_name, meta)])]))
    if cost:
        doc.append(Section("FD against sampling cost", [Figure(cost, "cost")]))
    if guidance_png:
        doc.append(Section("Classifier-free guidance", [Figure(guidance_png, "guidance"), Notes([GUIDANCE_NOTE])]))
    if posthoc_png or posthoc_text:
        doc.append(Section("Post-hoc EMA", ([Figure(posthoc_png, "post-hoc EMA")] if posthoc_png else [])
                           + [Bullets(posthoc_text), Notes([POSTHOC_NOTE])]))
    if pictures:
        doc.append(Section("The reference project's pictures", [Notes([PICTURES_NOTE]), Links(pictures)]))
    if control:
        doc.append(Section("Controllability", [Notes([CONTROL_NOTE]), Gallery(control)]))
    return doc


def write(out: str, results: list, meta: dict) -> dict:
    """Write <out>/report.md and <out>/report.html (and the figures); returns their paths."""
    doc = sections(out, results, meta)
    md_path, html_path = os.path.join(out, "report.md"), os.path.join(out, "report.html")
    fileio.write_text(md_path, markdown(TITLE, doc, out))
    fileio.write_text(html_path, html_document(TITLE, doc, out))
    return {"md": md_path, "html": html_path}


if __name__ == "__main__":
    main()
