"""The command line every entry point shares: one-line argparse errors, --help with defaults,
range-checked types, and the run flags (--logdir, --seed, --dist_timeout, the log formats,
--compile). trainkit.run re-exports every name here (families import them from there)."""

import argparse
import os
import sys

import torch


def program_name() -> str:
    """'improved_diffusion.train' under `python -m improved_diffusion.train`, else the script name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else os.path.basename(sys.argv[0] or "main")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every flag's default and keeps the description's own line breaks. An empty
    or None default, or a help line that already speaks of its default, gets no suffix."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, "", argparse.SUPPRESS) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `prog: error: ...`, exit status 2, and whose --help
    shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("prog", program_name())
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def str2bool(v) -> bool:
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {v!r}")


def _ranged(kind, lo, hi, lo_open, hi_open):
    def parse(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value != value:  # NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        low_bad = lo is not None and (value <= lo if lo_open else value < lo)
        high_bad = hi is not None and (value >= hi if hi_open else value > hi)
        if low_bad or high_bad:
            left = "" if lo is None else ("(" if lo_open else "[") + f"{lo}"
            right = "" if hi is None else f"{hi}" + (")" if hi_open else "]")
            where = (f"in {left}, {right}" if lo is not None and hi is not None else
                     f"{'>' if lo_open else '>='} {lo}" if lo is not None else f"{'<' if hi_open else '<='} {hi}")
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {where}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def int_range(lo=None, hi=None):
    """An argparse type: an integer in [lo, hi] (either end may be None). A value out of range
    is refused at parse time with a one-line error naming the flag."""
    return _ranged(int, lo, hi, False, False)


def float_range(lo=None, hi=None, lo_open=False, hi_open=False):
    """An argparse type: a float (not NaN) in [lo, hi] (open ends with lo_open / hi_open)."""
    return _ranged(float, lo, hi, lo_open, hi_open)


POSITIVE_INT = int_range(1)
NONNEG_INT = int_range(0)
POSITIVE_FLOAT = float_range(0, lo_open=True)
NONNEG_FLOAT = float_range(0)


def add_run_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--logdir", default="",
                        help="run directory (default: $OPENAI_LOGDIR, else runs/<family>-<time>)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (each rank adds its rank)")
    parser.add_argument("--dist_timeout", type=POSITIVE_FLOAT, default=None,
                        help="seconds a collective waits for a peer before failing "
                             "(default $TRAINKIT_DIST_TIMEOUT or 1800)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write every logged scalar (at its step) and the sample grids as TensorBoard "
                             "event files in RUN_DIR/tb/, from rank 0 (also on when $OPENAI_LOG_FORMAT names "
                             'tensorboard); needs pip install -e ".[tensorboard]"')
    parser.add_argument("--wandb", action="store_true",
                        help="also log every logged scalar (at its step) to a Weights & Biases run, from rank 0 "
                             "(also on when $OPENAI_LOG_FORMAT names wandb; WANDB_MODE=offline keeps it local); "
                             'needs pip install -e ".[wandb]"')
    parser.add_argument("--no_progress", action="store_true",
                        help="no training progress bar on stderr (default: training shows one on rank 0 when "
                             "stderr is a terminal; samplers keep their own)")
    parser.add_argument("--compile", type=str2bool, default=False,
                        help="torch.compile the networks' training forward (DDP-wrapped first, as torch's DDP "
                             "notes ask, so the compiler splits graphs at DDP's gradient buckets); "
                             "checkpoints keep their key names; default false")
    return parser


def compiled(module, on: bool):
    """`module` (a network, or the DistributedDataParallel around one) compiled when `on`.
    Compile after the DDP wrap: torch documents DDP + TorchDynamo that way (DDPOptimizer splits
    the graph at the bucket boundaries, so the all-reduce of one bucket overlaps the backward
    of the next). The result is only called for training: checkpoints, EMA and optimizers keep
    the original module, so saved keys never carry torch.compile's `_orig_mod.` prefix."""
    if not on:
        return module
    return torch.compile(module)

