"""Reading a run's progress.csv back: every row (`read_progress`), or the last complete row of a
file that a running training is still writing (`latest_progress`). The one reader of the file
trainkit.logger writes: evaluations and benchmarks read it through here.

Cells become floats where they parse as numbers, else stay text; blank cells are left out (a
column that appeared later, or a key a row did not log).
"""

import csv
import io
import os

import blobfile as bf

PROGRESS_FILE = "progress.csv"


def _row(keys, cells) -> dict:
    row = {}
    for k, v in zip(keys, cells):
        if v is None or v == "":
            continue
        try:
            row[k] = float(v)
        except ValueError:
            row[k] = v
    return row


def progress_path(path_or_dir) -> str:
    """A run directory's progress.csv, or `path_or_dir` itself when it names a .csv file."""
    text = str(path_or_dir)
    return text if text.endswith(".csv") else bf.join(text, PROGRESS_FILE)


def read_progress(path_or_dir) -> list:
    """Every row of a progress.csv (a run directory's, or any .csv file the logger wrote, such
    as the loop's quality.csv) as a dict, in order."""
    with bf.BlobFile(progress_path(path_or_dir), "r") as f:
        text = f.read()
    reader = csv.reader(io.StringIO(text))
    keys = next(reader, [])
    return [_row(keys, cells) for cells in reader if cells]


def latest_progress(path_or_dir, tail_bytes: int = 65536):
    """The last complete row of the progress.csv a running training is writing, or None while
    it has none (or no file yet). Reads the header and the file's tail only. The training may be
    in the middle of a line (no newline yet: skipped), or rewriting the file because a column
    appeared (a row whose cell count is not the header's: skipped); the next look sees the
    finished file. A local file only (the live view of a run on this machine)."""
    path = progress_path(path_or_dir)
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
        if text and len(cells) == len(keys):
            return _row(keys, cells)
    return None
