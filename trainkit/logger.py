"""openai-style key/value logger.

`logkv` records a value, `logkv_mean` accumulates a mean, `dumpkvs` closes a row: means are
reduced over all ranks (weighted by how many values each rank saw), then rank 0 writes

- a table to stdout and to `log.txt` (with every `log()` line),
- a row to `progress.csv` (columns grow when new keys appear, older rows padded, as openai; a
  file holding rows of an earlier run is only appended to, in its own columns),
- one JSON object per row to `stats.jsonl`.

Other ranks write nothing. `dumpkvs` is a collective: every rank calls it at the same step
(unless the logger was made with `reduce_over_ranks=False`: then each rank keeps its own means
and no rank waits for another, as openai's logger without a `comm`). `formats` picks which of
the outputs are written (improved_diffusion.logger maps $OPENAI_LOG_FORMAT onto it), and
`names` renames their files (openai's progress.json for the JSON lines). A blobfile URL as
the run directory works: files are kept in a local staging folder and copied up after each row.
"""

import csv
import io
import json
import math
import os
import sys
import tempfile
from collections import defaultdict

import blobfile as bf

from . import dist
from .fileio import is_local

LOG_FILES = ("log.txt", "progress.csv", "stats.jsonl")
FORMATS = ("stdout", "log", "csv", "jsonl")  # the table on stdout, then one file each, named by FILE_NAMES
FILE_NAMES = dict(zip(FORMATS[1:], LOG_FILES))


def _format_value(v) -> str:
    if isinstance(v, float) or hasattr(v, "__float__") and not isinstance(v, (bool, int, str)):
        return "%-8.3g" % float(v)
    return str(v)


def format_table(kvs: dict) -> str:
    def cut(s, n=30):
        return s[: n - 3] + "..." if len(s) > n else s

    rows = sorted(((cut(k), cut(_format_value(v))) for k, v in kvs.items()), key=lambda kv: kv[0].lower())
    if not rows:
        return ""
    kw = max(len(k) for k, _ in rows)
    vw = max(len(v) for _, v in rows)
    dashes = "-" * (kw + vw + 7)
    lines = [dashes] + [f"| {k:<{kw}} | {v:<{vw}} |" for k, v in rows] + [dashes]
    return "\n".join(lines) + "\n"


def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible rather than invalid
    return v


class Logger:
    def __init__(self, dir: str, stdout=True, formats=None, names=None, reduce_over_ranks=True):
        """`formats`: which of FORMATS to write (default all, stdout only when `stdout`); `names`:
        file names replacing some of FILE_NAMES, e.g. {"jsonl": "progress.json"}."""
        if formats is None:
            formats = FORMATS if stdout else FORMATS[1:]
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"unknown logger format {unknown[0]!r} (expected {', '.join(FORMATS)})")
        self.dir = dir
        self.is_main = dist.is_main()
        self.formats = tuple(formats)
        self.reduce_over_ranks = reduce_over_ranks
        self._values = {}
        self._means = defaultdict(lambda: [0.0, 0])
        self._csv_keys = []
        self._csv_frozen = False  # a progress.csv with rows from before this process: append only
        self._stdout = "stdout" in self.formats and self.is_main
        self._log_txt = self._jsonl = None
        self._csv = "csv" in self.formats
        self._names = {**FILE_NAMES, **(names or {})}
        self._files = [self._names[fmt] for fmt in FORMATS[1:] if fmt in self.formats]
        self._remote = not is_local(dir)
        self._local_dir = tempfile.mkdtemp(prefix="trainkit-log-") if self._remote else dir
        if self.is_main:
            os.makedirs(self._local_dir, exist_ok=True)
            if self._remote:  # a resumed run continues the remote files, never replaces them
                for name in self._files:
                    if bf.exists(bf.join(dir, name)):
                        bf.copy(bf.join(dir, name), os.path.join(self._local_dir, name), overwrite=True)
            if "log" in self.formats:
                self._log_txt = open(os.path.join(self._local_dir, self._names["log"]), "a")
            if "jsonl" in self.formats:
                self._jsonl = open(os.path.join(self._local_dir, self._names["jsonl"]), "a")
            csv_path = os.path.join(self._local_dir, self._names["csv"])
            if self._csv and os.path.exists(csv_path):  # resuming into the same run directory: keep the columns
                with open(csv_path) as f:
                    header = f.readline().strip()
                self._csv_keys = header.split(",") if header else []
                self._csv_frozen = bool(self._csv_keys)

    def get_dir(self) -> str:
        return self.dir

    def logkv(self, key, value):
        self._values[key] = value

    def logkv_mean(self, key, value):
        acc = self._means[key]
        acc[0] += float(value)
        acc[1] += 1

    def logkv_sum(self, key, total, count):
        """Merge `count` observations summing to `total` into the mean of `key` (what
        `logkv_mean` would hold after `count` calls)."""
        if count:
            acc = self._means[key]
            acc[0] += float(total)
            acc[1] += count

    def logkvs(self, d: dict):
        for k, v in d.items():
            self.logkv(k, v)

    def dumpkvs(self) -> dict:
        """Reduce the means over ranks and write one row. Collective (call on every rank) unless the
        logger keeps its means per rank (`reduce_over_ranks=False`)."""
        local = {k: (s, n) for k, (s, n) in self._means.items()}
        merged = defaultdict(lambda: [0.0, 0])
        for part in dist.all_gather_object(local) if self.reduce_over_ranks else [local]:
            for k, (s, n) in part.items():
                merged[k][0] += s
                merged[k][1] += n
        row = dict(self._values)
        row.update({k: s / n for k, (s, n) in merged.items() if n})
        if self.is_main and row:
            table = format_table(row)
            if self._stdout:
                sys.stdout.write(table)
                sys.stdout.flush()
            if self._log_txt:
                self._log_txt.write(table)
                self._log_txt.flush()
            if self._csv:
                self._write_csv(row)
            if self._jsonl:
                self._jsonl.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
                self._jsonl.flush()
            self._sync_remote()
        self._values.clear()
        self._means.clear()
        return row

    def _write_csv(self, row: dict):
        path = os.path.join(self._local_dir, self._names["csv"])
        # A file this process started grows columns as keys appear (rewritten, as openai's is). One
        # that holds an earlier run's rows (ours resumed, or openai's) is only appended to, in its
        # own columns: keys it lacks are in stats.jsonl and log.txt.
        new_keys = [] if self._csv_frozen else sorted(set(row) - set(self._csv_keys))
        if new_keys:
            old_rows = []
            if os.path.exists(path):
                with open(path, newline="") as f:
                    old_rows = list(csv.reader(f))[1:]
            self._csv_keys += new_keys
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(self._csv_keys)
                for r in old_rows:
                    w.writerow(r + [""] * (len(self._csv_keys) - len(r)))
        with open(path, "a", newline="") as f:
            csv.writer(f).writerow(["" if row.get(k) is None else _jsonable(row[k]) for k in self._csv_keys])

    def log(self, *args):
        if not self.is_main:
            return
        line = " ".join(str(a) for a in args)
        if self._stdout:
            print(line, flush=True)
        if self._log_txt:
            self._log_txt.write(line + "\n")
            self._log_txt.flush()

    def _sync_remote(self):
        if self._remote:
            for name in self._files:
                src = os.path.join(self._local_dir, name)
                if os.path.exists(src):
                    bf.copy(src, bf.join(self.dir, name), overwrite=True)

    def close(self):
        if self.is_main:
            self._sync_remote()
            for f in (self._log_txt, self._jsonl):
                if f:
                    f.close()


def configure(dir: str, stdout=True) -> Logger:
    return Logger(dir, stdout=stdout)


def read_progress(path_or_dir) -> list:
    """Rows of a progress.csv as dicts of floats (blank cells are left out)."""
    path = bf.join(path_or_dir, "progress.csv") if not str(path_or_dir).endswith(".csv") else path_or_dir
    with bf.BlobFile(path, "r") as f:
        text = f.read()
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        out = {}
        for k, v in r.items():
            if v == "":
                continue
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
        rows.append(out)
    return rows
