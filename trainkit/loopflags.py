"""The flags the training loop owns, declared once for every family with one type, one default
and one help line: --max_steps, --save_interval, --log_interval, --precision,
--resume_checkpoint, --ema_rate and the quality probe's --probe_*.

A family whose reference project has its own default keeps it with `parser.set_defaults` after
`add_args` (DDGAN logs every 100 steps and checkpoints by epochs); a reference project's own
spelling is an alias the family adds (DDGAN's bare `--resume` is `aliases=("--resume",)`; its
--use_ema/--ema_decay and --save_ckpt_every are its own flags that it maps onto these). `skip`
leaves out flags a family declares another way (improved_diffusion's openai-style defaults
dict), which must then use `TYPES` for their types.
"""

from . import flags
from .precision import MODES as PRECISIONS

# the probe's feature spaces (evaluations.metrics.FEATURES: trainkit imports nothing of evaluations)
PROBE_FEATURES = ("digits", "inception")


def _ema_rates(text):
    from .ema import rates_arg  # imported when parsing: trainkit.ema imports checkpoint and dist

    return rates_arg(text)


_ema_rates.__name__ = "ema_rate"  # argparse names the type in its messages

# name -> (type, default, help)
LOOP_FLAGS = {
    "max_steps": (flags.NONNEG_INT, 0, "stop (with a checkpoint) after this many optimizer steps (0: no limit of its "
                  "own)"),
    "save_interval": (flags.NONNEG_INT, 10000, "steps between checkpoints (0: none between; one is also written at "
                      "the end and at a stop)"),
    "log_interval": (flags.POSITIVE_INT, 10, "steps averaged into one log row"),
    "precision": (str, "fp32", "autocast precision: fp32, fp16 (with a loss scale) or bf16"),
    "resume_checkpoint": (str, "", "continue: auto (the newest checkpoint of --logdir, or a fresh start when it has "
                          "none; also a bare flag), a run directory (its newest step) or a checkpoint file"),
    "ema_rate": (_ema_rates, "", "comma list of EMA rates in [0, 1), one ema_RATE_STEP.pt file each ('': none)"),
}
PROBE_FLAGS = {
    "probe_points": (flags.NONNEG_INT, 0, "evenly spaced points of the run's budget (--max_steps, or the time to "
                     "$TRAINKIT_DEADLINE) at which rank 0 measures the FD of --probe_samples fixed samples into "
                     "RUN_DIR/quality.csv, the last at the end (0: off)"),
    "probe_samples": (flags.int_range(10), 200, "images each probe samples (same noise every time)"),
    "probe_features": (str, "digits", "the probe's feature space: digits (FD-digits) or inception (FID)"),
    "probe_reference": (str, "digits", "digits (the sklearn digits' train split at the run's image size) or an .npz "
                        "of reference features ('features', N x d)"),
    "probe_inception_weights": (str, "", "--probe_features inception: a local pt_inception-2015-12-05 weights file "
                                "(default: torch hub's)"),
}
TYPES = {name: kind for name, (kind, _, _) in {**LOOP_FLAGS, **PROBE_FLAGS}.items()}


def add_args(parser, skip=(), aliases=None, probe=True):
    """Declare the loop's flags on `parser` (all but `skip`); `aliases` maps a flag name to extra
    option strings (a reference project's spellings); `probe` adds the --probe_* flags."""
    aliases = aliases or {}
    for name, (kind, default, text) in {**LOOP_FLAGS, **(PROBE_FLAGS if probe else {})}.items():
        if name in skip:
            continue
        options = [f"--{name}", *aliases.get(name, ())]
        extra = {"probe_features": {"choices": PROBE_FEATURES}, "precision": {"choices": PRECISIONS}}.get(name, {})
        if name == "resume_checkpoint":
            extra = {"nargs": "?", "const": "auto"}  # a bare flag (DDGAN's `--resume`) continues
        parser.add_argument(*options, dest=name, type=kind, default=default, help=text, **extra)
    return parser
