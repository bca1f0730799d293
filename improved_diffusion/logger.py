"""openai's `improved_diffusion.logger` API, on trainkit's logger.

Code written against openai's package (`from improved_diffusion import logger`) runs unchanged:
`configure(dir=None, format_strs=None, comm=None, log_suffix="")`, `logkv`, `logkv_mean`,
`logkvs`, `dumpkvs`, `getkvs`, `log` / `debug` / `info` / `warn` / `error` with `set_level`
and the level constants, `get_dir`, `record_tabular` / `dump_tabular`, `profile_kv` / `profile`,
`get_current`, `reset`, `scoped_configure`. Functions used before `configure` set up a default
logger, as openai's do.

The settings are read as openai reads them: the directory is `dir`, else $OPENAI_LOGDIR, else
`<tmp>/openai-<time>`; the formats are `format_strs`, else $OPENAI_LOG_FORMAT (a comma list),
else `stdout,log,csv`. Formats and their files: stdout (the key/value table), log (log.txt, also
every `log()` line), csv (progress.csv), json (progress.json, one JSON object per `dumpkvs`),
tensorboard (event files under tb/: trainkit.logger's tensorboard format, scalars at each row's
`step`, else at the row's number 1, 2, ... as openai's; needs the tensorboard package:
`pip install -e ".[tensorboard]"`), wandb (a Weights & Biases run, trainkit.logger's wandb
format: the numbers of every row, at its `step` else its row number; its id kept in
`wandb-run-id` so that configuring the same folder again continues that run; needs
`pip install -e ".[wandb]"`). An unknown format is a one-line error naming it.

Differences from openai's, all on the side of keeping data: rank 0 alone writes (openai's other
ranks write log-rank<N>.txt); files are appended to, never truncated, so configuring a folder
that holds a run adds to its logs; with a `comm`, `dumpkvs` averages the means over every rank
through trainkit's process group (a collective; the comm object itself is not used); without
one each rank keeps its own values and no rank waits for another, as in openai's.
"""

import contextlib
import datetime
import os
import tempfile
import time

from trainkit import dist
from trainkit import logger as _trainkit_logger
from trainkit.errors import UserError

DEBUG = 10
INFO = 20
WARN = 30
ERROR = 40
DISABLED = 50

FORMATS = ("stdout", "log", "csv", "json", "tensorboard", "wandb")
DEFAULT_FORMAT = "stdout,log,csv"
_TRAINKIT_FORMATS = {"stdout": "stdout", "log": "log", "csv": "csv", "json": "jsonl", "tensorboard": "tensorboard",
                     "wandb": "wandb"}
_LAUNCHER_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


def _rank():
    """This process's rank, also before the process group exists (from the launcher's variables,
    so that importing mpi4py is not needed, as openai's logger does)."""
    if dist.is_initialized():
        return dist.rank()
    for name in _LAUNCHER_RANK_VARS:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


_tensorboard_installed = _trainkit_logger.tensorboard_installed


def parse_formats(format_strs, where):
    """The formats of a list (or a comma string) of names, empty names dropped; an unknown one,
    or tensorboard without its package, is a one-line UserError that says `where` it came from."""
    if isinstance(format_strs, str):
        format_strs = format_strs.split(",")
    formats = [f.strip() for f in format_strs if f and f.strip()]
    for f in formats:
        if f not in FORMATS:
            raise UserError(f"{where}: unknown log format {f!r} (expected a comma list of {', '.join(FORMATS)})")
    if "tensorboard" in formats and not _tensorboard_installed():
        raise UserError(f"{where}: the tensorboard format needs the tensorboard package: "
                        f"{_trainkit_logger.TENSORBOARD_INSTALL}")
    if "wandb" in formats and not _trainkit_logger.wandb_installed():
        raise UserError(f"{where}: the wandb format needs the wandb package: {_trainkit_logger.WANDB_INSTALL}")
    return formats


class Logger:
    """openai's Logger object: `name2val` holds this row's values (means so far for logkv_mean)."""

    DEFAULT = None  # the logger functions set up when called before configure()
    CURRENT = None  # the logger the module functions use

    def __init__(self, dir, formats, reduce_over_ranks=False, log_suffix=""):
        self.dir = dir
        self.formats = list(formats)
        self.level = INFO
        self.name2val = {}
        self._sums = {}  # key -> [sum, count] of logkv_mean, so the mean is sum / count exactly
        main = _rank() == 0
        self._writer = _trainkit_logger.Logger(
            dir,
            formats=[_TRAINKIT_FORMATS[f] for f in self.formats if f in _TRAINKIT_FORMATS] if main else [],
            names={"log": f"log{log_suffix}.txt", "csv": f"progress{log_suffix}.csv",
                   "jsonl": f"progress{log_suffix}.json", "tensorboard": f"tb{log_suffix}"},
            reduce_over_ranks=reduce_over_ranks,
        )

    def logkv(self, key, val):
        self._sums.pop(key, None)
        self.name2val[key] = val

    def logkv_mean(self, key, val):
        acc = self._sums.setdefault(key, [0.0, 0])
        acc[0] += float(val)
        acc[1] += 1
        self.name2val[key] = acc[0] / acc[1]

    def dumpkvs(self):
        """Write this row (rank 0) and return it. A collective when the logger has a comm."""
        for key, val in self.name2val.items():
            if key in self._sums:
                self._writer.logkv_sum(key, *self._sums[key])
            else:
                self._writer.logkv(key, val)
        row = self._writer.dumpkvs()
        self.name2val.clear()
        self._sums.clear()
        return row

    def log(self, *args, level=INFO):
        if self.level <= level:
            self._writer.log(*args)

    def set_level(self, level):
        self.level = level

    def set_comm(self, comm):
        self._writer.reduce_over_ranks = comm is not None

    def get_dir(self):
        return self.dir

    def close(self):
        self._writer.close()


def configure(dir=None, format_strs=None, comm=None, log_suffix=""):
    """Make the current logger: `dir`, else $OPENAI_LOGDIR, else <tmp>/openai-<time>; formats
    `format_strs`, else $OPENAI_LOG_FORMAT, else stdout,log,csv (rank 0; other ranks write none)."""
    if dir is None:
        dir = os.environ.get("OPENAI_LOGDIR") or None
    if dir is None:
        dir = os.path.join(tempfile.gettempdir(), datetime.datetime.now().strftime("openai-%Y-%m-%d-%H-%M-%S-%f"))
    dir = os.path.expanduser(str(dir))
    if format_strs is None:
        formats = parse_formats(os.environ.get("OPENAI_LOG_FORMAT", DEFAULT_FORMAT), "OPENAI_LOG_FORMAT")
    else:
        formats = parse_formats(format_strs, "format_strs")
    os.makedirs(dir, exist_ok=True)
    Logger.CURRENT = Logger(dir, formats, reduce_over_ranks=comm is not None, log_suffix=log_suffix)
    if formats:
        log(f"Logging to {dir}")


def get_current():
    if Logger.CURRENT is None:
        configure()
        Logger.DEFAULT = Logger.CURRENT
    return Logger.CURRENT


def reset():
    """Close the current logger and go back to the default one."""
    if Logger.CURRENT is not Logger.DEFAULT:
        Logger.CURRENT.close()
        Logger.CURRENT = Logger.DEFAULT
        log("Reset logger")


@contextlib.contextmanager
def scoped_configure(dir=None, format_strs=None, comm=None):
    previous = Logger.CURRENT
    configure(dir=dir, format_strs=format_strs, comm=comm)
    try:
        yield
    finally:
        Logger.CURRENT.close()
        Logger.CURRENT = previous


def logkv(key, val):
    """Record a value for this row; the last call wins."""
    get_current().logkv(key, val)


def logkv_mean(key, val):
    """Record a value for this row; the row holds the mean of all calls."""
    get_current().logkv_mean(key, val)


def logkvs(d):
    for key, val in d.items():
        logkv(key, val)


def dumpkvs():
    """Write the row of values recorded since the last dumpkvs, and return it."""
    return get_current().dumpkvs()


def getkvs():
    return get_current().name2val


def log(*args, level=INFO):
    """A line of the arguments, space-separated, to stdout and log.txt (as configured)."""
    get_current().log(*args, level=level)


def debug(*args):
    log(*args, level=DEBUG)


def info(*args):
    log(*args, level=INFO)


def warn(*args):
    log(*args, level=WARN)


def error(*args):
    log(*args, level=ERROR)


def set_level(level):
    """Lines below `level` (DEBUG, INFO, WARN, ERROR, DISABLED) are dropped."""
    get_current().set_level(level)


def set_comm(comm):
    get_current().set_comm(comm)


def get_dir():
    """The directory the logs are written to."""
    return get_current().get_dir()


record_tabular = logkv
dump_tabular = dumpkvs


@contextlib.contextmanager
def profile_kv(scopename):
    """Add the seconds spent in the block to this row's `wait_<scopename>`."""
    key = "wait_" + scopename
    start = time.time()
    try:
        yield
    finally:
        current = get_current()
        current.name2val[key] = current.name2val.get(key, 0.0) + time.time() - start


def profile(name):
    """Decorator: time every call of the function into `wait_<name>`."""

    def decorate(func):
        def timed(*args, **kwargs):
            with profile_kv(name):
                return func(*args, **kwargs)

        return timed

    return decorate
