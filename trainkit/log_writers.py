"""The logger's outputs, one writer object each in openai's `KVWriter` shape: `writekvs(kvs)`
writes one row, `close()` ends. The table (stdout and log.txt, which also take free lines:
`writeseq`), progress.csv, the JSON lines, TensorBoard event files and a Weights & Biases run.
trainkit.logger decides which are on and calls them on rank 0; no writer communicates.
"""

import csv
import json
import math
import os
import random
import secrets
import string

import blobfile as bf
import numpy as np

from .errors import UserError
from .fileio import write_text

# the id of the run directory's W&B run, so that a resume continues that run's curves instead
# of starting a second run; written by us only when absent, so an id a user put there is kept
WANDB_RUN_ID_FILE = "wandb-run-id"
WANDB_ID_RESERVED = ":;,#?/'"  # characters wandb refuses in a run id
WANDB_PROJECT = "genbench"  # when $WANDB_PROJECT is unset


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


def _number(value):
    """`value` as a float when it is one number (int, float, bool, numpy or 0-dim tensor), else None."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    if (value.numel() if hasattr(value, "numel") else np.size(value)) != 1:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def image_array(image):
    """(uint8 array, dataformats) of an image: uint8, or float in [0, 1]; HWC, CHW or HW; a numpy
    array or a tensor (any device)."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or not (a.shape[-1] in (1, 3, 4) or a.shape[0] in (1, 3, 4)):
        raise ValueError(f"image of shape {tuple(a.shape)}: expected HWC or CHW with 1, 3 or 4 channels, or HW")
    if np.issubdtype(a.dtype, np.floating):
        a = (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ValueError(f"image of dtype {a.dtype}: expected uint8, or float in [0, 1]")
    return a, "HWC" if a.shape[-1] in (1, 3, 4) else "CHW"


class TableWriter:
    """The row as an aligned table, and free text lines (`writeseq`), written by `write(text)`:
    the console (through the progress bar) or a file opened for appending."""

    def __init__(self, write, close=None):
        self._write = write
        self._close = close

    @classmethod
    def to_file(cls, path):
        f = open(path, "a")

        def write(text):
            f.write(text)
            f.flush()
        writer = cls(write, f.close)
        writer.file = f
        return writer

    def writekvs(self, kvs: dict):
        table = format_table(kvs)
        if table:
            self._write(table)

    def writeseq(self, line: str):
        self._write(line + "\n")

    def close(self):
        if self._close is not None:
            self._close()
            self._close = None


class JSONWriter:
    """One JSON object per row (non-finite numbers as text: JSON has none)."""

    def __init__(self, path):
        self.file = open(path, "a")

    def writekvs(self, kvs: dict):
        self.file.write(json.dumps({k: _jsonable(v) for k, v in kvs.items()}) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


class CSVWriter:
    """progress.csv. A file this writer started grows columns as keys appear (rewritten, as
    openai's is). One that holds an earlier run's rows (ours resumed, or openai's) is only
    appended to, in its own columns: keys it lacks are in the JSON lines and log.txt."""

    def __init__(self, path):
        self.path = path
        self.keys = []
        if os.path.exists(path):  # resuming into the same run directory: keep the columns
            with open(path) as f:
                header = f.readline().strip()
            self.keys = header.split(",") if header else []
        self.frozen = bool(self.keys)

    def writekvs(self, row: dict):
        new_keys = [] if self.frozen else sorted(set(row) - set(self.keys))
        if new_keys:
            old_rows = []
            if os.path.exists(self.path):
                with open(self.path, newline="") as f:
                    old_rows = list(csv.reader(f))[1:]
            self.keys += new_keys
            with open(self.path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(self.keys)
                for r in old_rows:
                    w.writerow(r + [""] * (len(self.keys) - len(r)))
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(["" if row.get(k) is None else _jsonable(row[k]) for k in self.keys])

    def close(self):
        pass


class TensorBoardWriter:
    """Rank 0's event files: the scalars of every row (`writekvs`), and images."""

    def __init__(self, directory):
        from torch.utils.tensorboard import SummaryWriter  # only when asked for: the package is optional

        self.writer = SummaryWriter(log_dir=directory)
        self.rows = 0

    def writekvs(self, row: dict):
        self.rows += 1
        step = _number(row.get("step"))
        step = int(step) if step is not None and math.isfinite(step) else self.rows
        for key, value in row.items():
            number = _number(value)
            if number is not None:  # text has no curve; it is in the other formats
                self.writer.add_scalar(key, number, step)
        self.writer.flush()  # a live TensorBoard, and a killed run, see every row

    def write_image(self, tag, image, step):
        array, dataformats = image_array(image)
        self.writer.add_image(tag, array, int(step), dataformats=dataformats)
        self.writer.flush()

    def close(self):
        self.writer.close()


def recorded_wandb_id(run_dir):
    """The W&B run id recorded in `run_dir` (WANDB_RUN_ID_FILE), or None when there is none; a
    file that holds no usable id is one line naming it (never taken for a missing one)."""
    path = bf.join(run_dir, WANDB_RUN_ID_FILE)
    if not bf.exists(path):
        return None
    try:
        with bf.BlobFile(path, "r") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the W&B run id ({getattr(e, 'strerror', None) or e})") from None
    run_id = text.strip()
    if not run_id or len(run_id.split()) != 1 or any(c in WANDB_ID_RESERVED for c in run_id):
        raise UserError(f"{path}: not a W&B run id ({run_id[:40]!r}); write the id of the W&B run to continue, "
                        f"or delete the file to start a new W&B run")
    return run_id


class WandBWriter:
    """Rank 0's Weights & Biases run: the numbers of every row. The run directory's recorded id
    (or $WANDB_RUN_ID) is continued; without one a new id is made and recorded."""

    def __init__(self, directory, run_dir, name, config):
        import wandb  # only when asked for: the package is optional

        # $WANDB_RUN_ID read here: the id passed to wandb.init would override it
        run_id = os.environ.get("WANDB_RUN_ID") or recorded_wandb_id(run_dir)
        continued = run_id is not None
        if run_id is None:  # as wandb makes its own: 8 base-36 digits (from secrets, not `random`)
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        # wandb.init must not move the training's random streams (resume is bit for bit)
        saved = random.getstate()
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or WANDB_PROJECT,
                name=name,
                id=run_id,
                # "allow": the run is continued when W&B has it (a resume), made when it has not
                resume="allow" if continued else None,
                # read here, not left to wandb: it reads its variables once per process
                dir=os.environ.get("WANDB_DIR") or directory,
                mode=os.environ.get("WANDB_MODE") or None,
                config=config,
                # the table and log lines are in log.txt already; wandb rewiring stdout would
                # also fight the progress bar
                settings=wandb.Settings(console="off"),
            )
        finally:
            random.setstate(saved)
        if not bf.exists(bf.join(run_dir, WANDB_RUN_ID_FILE)):  # only when absent: never replace a file
            try:
                write_text(bf.join(run_dir, WANDB_RUN_ID_FILE), run_id + "\n")
            except BaseException:
                self.run.finish()  # no W&B run left open behind the error
                raise
        self.rows = 0

    def writekvs(self, row: dict):
        self.rows += 1
        step = _number(row.get("step"))
        step = int(step) if step is not None and math.isfinite(step) else self.rows
        numbers = {k: n for k, n in ((k, _number(v)) for k, v in row.items()) if n is not None}
        self.run.log(numbers, step=step)

    def close(self):
        self.run.finish()
