"""openai-style key/value logger.

`logkv` records a value, `logkv_mean` accumulates a mean, `dumpkvs` closes a row: means are
reduced over all ranks (weighted by how many values each rank saw), then rank 0 writes

- a table to stdout and to `log.txt` (with every `log()` line),
- a row to `progress.csv` (columns grow when new keys appear, older rows padded, as openai; a
  file holding rows of an earlier run is only appended to, in its own columns),
- one JSON object per row to `stats.jsonl`,
- with the "tensorboard" format (off unless asked for: `tensorboard=True`, or in `formats`),
  every numeric value of the row as a scalar in event files under `tb/`, at the row's `step`
  (or at the row's number, 1, 2, ..., in a row without one, as openai's logger counts), and
  the images of `log_image`. torch.utils.tensorboard is imported only then; without the
  tensorboard package that is a one-line UserError saying how to install it.
- with the "wandb" format (off unless asked for: `wandb=True`, or in `formats`), every numeric
  value of the row logged to a Weights & Biases run at the row's `step` (counted as for
  TensorBoard), with `config` as the run's config. wandb is imported only then; its settings
  come from its own variables (WANDB_MODE=offline for no network, WANDB_PROJECT, default
  "genbench", WANDB_DIR, default the run directory: files under `RUN_DIR/wandb/`). The W&B
  run's id is recorded in `RUN_DIR/wandb-run-id` (written once, when absent): every later start
  in that run directory (a resume) logs into the same W&B run, a new directory gets a new one.

While a progress bar is attached (`attach_bar`, trainkit.loop's tqdm bar on a terminal), the
table and `log()` lines go to stdout through the bar, so that they never land inside it.

Other ranks write nothing. `dumpkvs` is a collective: every rank calls it at the same step
(unless the logger was made with `reduce_over_ranks=False`: then each rank keeps its own means
and no rank waits for another, as openai's logger without a `comm`). `formats` picks which of
the outputs are written (improved_diffusion.logger maps $OPENAI_LOG_FORMAT onto it), and
`names` renames their files (openai's progress.json for the JSON lines). A blobfile URL as
the run directory works: files are kept in a local staging folder and copied up after each row.
"""

import csv
import importlib.util
import io
import json
import math
import os
import random
import secrets
import string
import sys
import tempfile
from collections import defaultdict

import blobfile as bf
import numpy as np

from . import dist
from .errors import UserError
from .fileio import is_local, write_text

LOG_FILES = ("log.txt", "progress.csv", "stats.jsonl")
DEFAULT_FORMATS = ("stdout", "log", "csv", "jsonl")  # the table on stdout, then one file each, named by FILE_NAMES
# tensorboard: event files in a folder; wandb: a Weights & Biases run; each only when asked for
FORMATS = DEFAULT_FORMATS + ("tensorboard", "wandb")
FILE_NAMES = dict(zip(DEFAULT_FORMATS[1:], LOG_FILES))
TENSORBOARD_DIR = "tb"
TENSORBOARD_INSTALL = 'pip install -e ".[tensorboard]"'
WANDB_INSTALL = 'pip install -e ".[wandb]"'
WANDB_PROJECT = "genbench"  # when $WANDB_PROJECT is unset
# the id of the run directory's W&B run, so that a resume continues that run's curves instead
# of starting a second run; written by us only when absent, so an id a user put there is kept
WANDB_RUN_ID_FILE = "wandb-run-id"
WANDB_ID_RESERVED = ":;,#?/'"  # characters wandb refuses in a run id


def tensorboard_installed() -> bool:
    """Whether the tensorboard package (which torch.utils.tensorboard needs) can be imported."""
    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard(what: str = "the tensorboard log format") -> None:
    """A one-line UserError naming `what` asked for TensorBoard and how to install it, unless
    the package is there."""
    if not tensorboard_installed():
        raise UserError(f"{what} needs the tensorboard package: {TENSORBOARD_INSTALL}")


def wandb_installed() -> bool:
    return importlib.util.find_spec("wandb") is not None


def require_wandb(what: str = "the wandb log format") -> None:
    """A one-line UserError naming `what` asked for Weights & Biases and how to install it,
    unless the package is there."""
    if not wandb_installed():
        raise UserError(f"{what} needs the wandb package: {WANDB_INSTALL}")


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


class _TensorBoard:
    """Rank 0's event files: the scalars of every row, and images."""

    def __init__(self, directory):
        from torch.utils.tensorboard import SummaryWriter  # only when asked for: the package is optional

        self.writer = SummaryWriter(log_dir=directory)
        self.rows = 0

    def write_row(self, row: dict):
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


class _WandB:
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

    def write_row(self, row: dict):
        self.rows += 1
        step = _number(row.get("step"))
        step = int(step) if step is not None and math.isfinite(step) else self.rows
        numbers = {k: n for k, n in ((k, _number(v)) for k, v in row.items()) if n is not None}
        self.run.log(numbers, step=step)

    def close(self):
        self.run.finish()


class Logger:
    def __init__(self, dir: str, stdout=True, formats=None, names=None, reduce_over_ranks=True, tensorboard=False,
                 wandb=False, config=None):
        """`formats`: which of FORMATS to write (default DEFAULT_FORMATS, stdout only when `stdout`);
        `tensorboard` / `wandb`: add that format; `names`: file names replacing some of
        FILE_NAMES, e.g. {"jsonl": "progress.json"}, or of TENSORBOARD_DIR ({"tensorboard": "tb1"});
        `config`: the wandb run's config (the run's options)."""
        if formats is None:
            formats = DEFAULT_FORMATS if stdout else DEFAULT_FORMATS[1:]
        formats = tuple(formats) + (("tensorboard",) if tensorboard and "tensorboard" not in formats else ())
        formats += ("wandb",) if wandb and "wandb" not in formats else ()
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"unknown logger format {unknown[0]!r} (expected {', '.join(FORMATS)})")
        if "tensorboard" in formats:
            require_tensorboard()  # on every rank alike, before any file is opened
        if "wandb" in formats:
            require_wandb()
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
        self._names = {**FILE_NAMES, "tensorboard": TENSORBOARD_DIR, **(names or {})}
        self._files = [self._names[fmt] for fmt in DEFAULT_FORMATS[1:] if fmt in self.formats]
        self._tensorboard = self._wandb = None
        self._bar = None  # a tqdm bar the console lines go through (attach_bar)
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
            if "tensorboard" in self.formats:  # a resumed run adds an event file; TensorBoard reads them all
                self._tensorboard = _TensorBoard(os.path.join(self._local_dir, self._names["tensorboard"]))
        if "wandb" in self.formats:
            self._start_wandb(config)

    def _start_wandb(self, config):
        """Rank 0 starts the wandb run; a failure (e.g. no API key outside offline mode) is one
        line on every rank alike, so that no rank goes on to wait in a collective for rank 0."""
        error = None
        if self.is_main:
            try:
                self._wandb = _WandB(self._local_dir, self.dir, os.path.basename(str(self.dir).rstrip("/")), config)
            except UserError as e:  # ours (the recorded id), already one line naming its file
                error = str(e)
            except Exception as e:  # wandb's own errors have no common base class
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                error = f"wandb could not start a run ({first}); log in with `wandb login`, or set WANDB_MODE=offline"
        if self.reduce_over_ranks:
            error = dist.broadcast_object(error)
        if error:
            self.close()  # the files opened so far keep what they hold
            raise UserError(error)

    def attach_bar(self, bar) -> None:
        """Write the console's lines through `bar` (a tqdm bar, or None to detach)."""
        self._bar = bar

    def _console(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout, end="")  # clears the bar, writes, redraws it
        else:
            sys.stdout.write(text)
        sys.stdout.flush()

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
                self._console(table)
            if self._log_txt:
                self._log_txt.write(table)
                self._log_txt.flush()
            if self._csv:
                self._write_csv(row)
            if self._jsonl:
                self._jsonl.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
                self._jsonl.flush()
            if self._tensorboard:
                self._tensorboard.write_row(row)
            if self._wandb:
                self._wandb.write_row(row)
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

    def log_image(self, tag: str, image, step: int) -> None:
        """An image (a sample grid: uint8, or float in [0, 1]; HWC, CHW or HW; numpy or tensor)
        in TensorBoard under `tag` at `step`. Does nothing when TensorBoard is off or on ranks
        other than 0 (so every rank may call it)."""
        if self._tensorboard is None:
            return
        self._tensorboard.write_image(tag, image, step)
        self._sync_remote()

    def log(self, *args):
        if not self.is_main:
            return
        line = " ".join(str(a) for a in args)
        if self._stdout:
            self._console(line + "\n")
        if self._log_txt:
            self._log_txt.write(line + "\n")
            self._log_txt.flush()

    def _sync_remote(self):
        if self._remote:
            for name in self._files:
                src = os.path.join(self._local_dir, name)
                if os.path.exists(src):
                    bf.copy(src, bf.join(self.dir, name), overwrite=True)
            if self._tensorboard:
                local_tb = os.path.join(self._local_dir, self._names["tensorboard"])
                for name in sorted(os.listdir(local_tb)) if os.path.isdir(local_tb) else []:
                    bf.copy(os.path.join(local_tb, name), bf.join(self.dir, self._names["tensorboard"], name),
                            overwrite=True)

    def close(self):
        if self.is_main:
            if self._tensorboard:
                self._tensorboard.close()  # flushes the last events before they are copied up
            if self._wandb:
                self._wandb.close()
                self._wandb = None  # a second close (the loop's, then the entry point's) finishes once
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
