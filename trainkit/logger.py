"""openai-style key/value logger: the row being built (`logkv`, `logkv_mean`), its reduction
over ranks, and which writers (trainkit.log_writers) get it.

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

import importlib.util
import os
import sys
import tempfile
from collections import defaultdict

import blobfile as bf

from . import dist
from .errors import UserError
from .fileio import is_local
from .log_writers import (  # noqa: F401 (re-export)
    WANDB_ID_RESERVED,
    WANDB_PROJECT,
    WANDB_RUN_ID_FILE,
    CSVWriter,
    JSONWriter,
    TableWriter,
    TensorBoardWriter,
    WandBWriter,
    format_table,
    image_array,
    recorded_wandb_id,
)
from .progress_file import latest_progress, read_progress  # noqa: F401 (re-export)

LOG_FILES = ("log.txt", "progress.csv", "stats.jsonl")
DEFAULT_FORMATS = ("stdout", "log", "csv", "jsonl")  # the table on stdout, then one file each, named by FILE_NAMES
# tensorboard: event files in a folder; wandb: a Weights & Biases run; each only when asked for
FORMATS = DEFAULT_FORMATS + ("tensorboard", "wandb")
FILE_NAMES = dict(zip(DEFAULT_FORMATS[1:], LOG_FILES))
TENSORBOARD_DIR = "tb"
TENSORBOARD_INSTALL = 'pip install -e ".[tensorboard]"'
WANDB_INSTALL = 'pip install -e ".[wandb]"'


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
        self._names = {**FILE_NAMES, "tensorboard": TENSORBOARD_DIR, **(names or {})}
        self._files = [self._names[fmt] for fmt in DEFAULT_FORMATS[1:] if fmt in self.formats]
        self._bar = None  # a tqdm bar the console lines go through (attach_bar)
        self._remote = not is_local(dir)
        self._local_dir = tempfile.mkdtemp(prefix="trainkit-log-") if self._remote else dir
        # rank 0's writers, in FORMATS order; the table ones also take log() lines
        self.writers, self._lines, self._log_txt, self._tensorboard, self._wandb = [], [], None, None, None
        if self.is_main:
            self._open_writers()
        if "wandb" in self.formats:
            self._start_wandb(config)

    def _open_writers(self):
        os.makedirs(self._local_dir, exist_ok=True)
        if self._remote:  # a resumed run continues the remote files, never replaces them
            for name in self._files:
                if bf.exists(bf.join(self.dir, name)):
                    bf.copy(bf.join(self.dir, name), os.path.join(self._local_dir, name), overwrite=True)
        local = {fmt: os.path.join(self._local_dir, self._names[fmt]) for fmt in self._names}
        if "stdout" in self.formats:
            self._lines.append(TableWriter(self._console))
        if "log" in self.formats:
            log_txt = TableWriter.to_file(local["log"])
            self._log_txt = log_txt.file
            self._lines.append(log_txt)
        self.writers += self._lines
        if "csv" in self.formats:
            self.writers.append(CSVWriter(local["csv"]))
        if "jsonl" in self.formats:
            self.writers.append(JSONWriter(local["jsonl"]))
        if "tensorboard" in self.formats:  # a resumed run adds an event file; TensorBoard reads them all
            self._tensorboard = TensorBoardWriter(local["tensorboard"])
            self.writers.append(self._tensorboard)

    def _start_wandb(self, config):
        """Rank 0 starts the wandb run; a failure (e.g. no API key outside offline mode) is one
        line on every rank alike, so that no rank goes on to wait in a collective for rank 0."""
        error = None
        if self.is_main:
            try:
                self._wandb = WandBWriter(self._local_dir, self.dir, os.path.basename(str(self.dir).rstrip("/")),
                                          config)
                self.writers.append(self._wandb)
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
            for writer in self.writers:
                writer.writekvs(row)
            self._sync_remote()
        self._values.clear()
        self._means.clear()
        return row

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
        for writer in self._lines:
            writer.writeseq(line)

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
                self.writers.remove(self._wandb)
                self._wandb = None  # a second close (the loop's, then the entry point's) finishes once
            self._sync_remote()
            for writer in self.writers:
                if writer is not self._tensorboard:
                    writer.close()


def configure(dir: str, stdout=True) -> Logger:
    return Logger(dir, stdout=stdout)
