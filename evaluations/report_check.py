"""Checks a written comparison report (`python -m evaluations.report --check DIR`, CI, tests):
a row per run, finite numbers in every cell, every image present; and reads its tables back.
"""

import math
import os
import re
import sys

from trainkit import run

from .report_tables import UNKNOWN

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
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [re.sub(r"^\[(.*)\]\(.*\)$", r"\1", c.strip())
                 for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
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
    """Problems with the report in `out`: missing runs, failed or non-finite cells, missing images.
    An NFE/img of "unknown" (samples whose sampler wrote no info json) is not a problem."""
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
            if col == "NFE/img" and r.get(col) == UNKNOWN:
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
    p = run.ArgumentParser(description="Check a comparison report: a row per run, finite numbers, images present.")
    p.add_argument("--check", required=True, metavar="DIR", help="the comparison's run directory")
    p.add_argument("--runs", default="", help="comma-separated run names that must have a row (empty: none required)")
    return p


def main(argv=None):
    a = create_parser().parse_args(argv)
    problems = check(a.check, [r for r in a.runs.split(",") if r])
    for line in problems:
        print(f"evaluations.report: {line}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{a.check}/report.md: every row complete, every image present")
