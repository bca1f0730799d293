"""The comparison report's tables: the results table, cost and hardware, recall per class, and
the closing summary lines, as rows of (text, link) cells that evaluations.report_render writes
to markdown and HTML.
"""

import math
import os

from .verdict import _label, collapsed_classes

# The results table: what a row's samples scored, plain numbers, one link per row (to the run) in
# report.md; every cell keeps its link in report.html. Cost and hardware go to COST_COLUMNS' table.
COLUMNS = [
    ("run", None), ("sampler", None), ("samples", "sample"), ("FD-digits", "sample"), ("FD std", "sample"),
    ("precision", "sample"), ("recall", "sample"), ("KID", "sample"), ("IS", "sample"), ("class acc.", "sample"),
    ("copies", "sample"), ("FD untrained", "untrained"),
]
COST_COLUMNS = ["run", "sampler", "steps", "train s", "train img/s", "parameters", "samples drawn", "NFE/img",
                "sampling s/img"]
UNKNOWN = "unknown"  # the NFE/img of samples without an info json


def _fmt(v, kind=None):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if kind == "int":
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _nfe_cell(nfe) -> str:
    """Network evaluations per image, from the samples' info json (compare reads it); a sampler
    that wrote none (an older sampler) leaves it unknown rather than guessed."""
    return UNKNOWN if nfe is None else _fmt(nfe, "int")


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
    def rel(p):
        return os.path.relpath(p, out) if p else None
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
    def rel(p):
        return os.path.relpath(p, out) if p else None
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
                         (_nfe_cell(row.get("nfe")), rel(row.get("dir"))),
                         (_fmt(row.get("sample_s_per_image")), rel(row.get("dir")))])
    return rows


def class_table(results: list, real=None):
    """(header, rows) of the per-class recall table of the class-conditional rows: class, real
    data's recall of that class, each row's (±1 std; "collapsed" by the verdict's rule); None
    without a conditional row."""
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

