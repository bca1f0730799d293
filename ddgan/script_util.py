"""Flags (train_ddgan.py's names and defaults), model construction and weight loading.

Flag semantics follow the reference exactly, including its quirks that users' commands depend
on: --centered, --resamp_with_conv, --conditional, --fir and --skip_rescale are on by default
and passing the flag turns the option OFF (argparse store_false). Two quirks are fixed: the
reference takes --attn_resolutions and --fir_kernel without a type (a command-line value became
a string); here they are lists of integers ("16", "16 8" or "16,8").
"""

import argparse

from trainkit import checkpoint, run
from trainkit.errors import UserError

from .diffusion import Diffusion
from .discriminator import DiscriminatorLarge, DiscriminatorSmall
from .ncsnpp import GeneratorConfig, NCSNpp

SMALL_D_DATASETS = ("cifar10", "stackmnist")
LARGE_D_DATASETS = ("lsun", "celeba_256")


class IntList(argparse.Action):
    """nargs='+' integers; each word may itself be a comma list: `16 8` == `16,8`. With `minimum`
    (add_argument(..., minimum=1)) a smaller entry is refused at parse time, naming the flag."""

    def __init__(self, *args, minimum=None, **kwargs):
        self.minimum = minimum
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        out = []
        for v in values if isinstance(values, list) else [values]:
            for part in str(v).split(","):
                if part.strip():
                    try:
                        out.append(int(part))
                    except ValueError:
                        parser.error(f"argument {option_string}: {part!r} is not an integer")
                    if self.minimum is not None and out[-1] < self.minimum:
                        parser.error(f"argument {option_string}: {part.strip()} is out of range: "
                                     f"must be >= {self.minimum}")
        setattr(namespace, self.dest, out)


_UNIT_INTERVAL = run.float_range(0, 1, hi_open=True)

# (flag, add_argument keywords, help). The names, defaults and the store_false quirks are
# train_ddgan.py's; the help says what each changes (the reference's own lines are terse).
_MODEL_ARGS = [
    ("--image_size", dict(type=run.POSITIVE_INT, default=32), "image height and width in pixels"),
    ("--num_channels", dict(type=run.POSITIVE_INT, default=3), "image channels (3: RGB, 1: grey)"),
    ("--centered", dict(action="store_false", default=True),
     "data in [-1, 1] (default); passing the flag means data in [0, 1] (the reference's store_false)"),
    ("--use_geometric", dict(action="store_true", default=False),
     "geometric variances beta_min (beta_max / beta_min)^t instead of the VP SDE's"),
    ("--beta_min", dict(type=run.POSITIVE_FLOAT, default=0.1), "beta(t) at t = 0 of the VP noise schedule (> 0)"),
    ("--beta_max", dict(type=run.POSITIVE_FLOAT, default=20.0),
     "beta(t) at t = 1 of the VP noise schedule (>= --beta_min)"),
    ("--num_channels_dae", dict(type=run.POSITIVE_INT, default=128),
     "base channels of the NCSN++ generator; level i has num_channels_dae x ch_mult[i]"),
    ("--n_mlp", dict(type=run.NONNEG_INT, default=3), "hidden layers of the mapping network from z to its embedding"),
    ("--ch_mult", dict(nargs="+", action=IntList, minimum=1, default=None),
     "channel multipliers, one per resolution level, e.g. 1 2 2 2 (required: the reference has no default)"),
    ("--num_res_blocks", dict(type=run.POSITIVE_INT, default=2), "residual blocks per resolution level"),
    ("--attn_resolutions", dict(nargs="+", action=IntList, minimum=1, default=[16]),
     "feature-map sizes in pixels that get self-attention, e.g. 16 or 16,8 (the reference takes them untyped)"),
    ("--dropout", dict(type=_UNIT_INTERVAL, default=0.0), "dropout probability in the residual blocks, in [0, 1)"),
    ("--resamp_with_conv", dict(action="store_false", default=True),
     "up/downsampling with a convolution; passing the flag turns it off (the reference's store_false)"),
    ("--conditional", dict(action="store_false", default=True),
     "the generator sees the timestep; passing the flag turns it off (the reference's store_false)"),
    ("--fir", dict(action="store_false", default=True),
     "FIR filtering in up/downsampling; passing the flag turns it off (the reference's store_false)"),
    ("--fir_kernel", dict(nargs="+", action=IntList, default=[1, 3, 3, 1]),
     "taps of the FIR resampling filter, e.g. 1 3 3 1 (the reference takes them untyped)"),
    ("--skip_rescale", dict(action="store_false", default=True),
     "residual and skip sums are divided by sqrt(2); passing the flag turns it off (the reference's store_false)"),
    ("--resblock_type", dict(default="biggan", choices=["biggan", "ddpm", "biggan_oneadagn"]),
     "residual block: biggan (resamples inside the block), ddpm, or biggan_oneadagn"),
    ("--progressive", dict(default="none", choices=["none", "output_skip", "residual"]),
     "how the decoder's levels feed the output: none, output_skip or residual"),
    ("--progressive_input", dict(default="residual", choices=["none", "input_skip", "residual"]),
     "how the downsampled input feeds the encoder's levels: none, input_skip or residual"),
    ("--progressive_combine", dict(default="sum", choices=["sum", "cat"]),
     "how a progressive input is combined with the features: sum or cat (concatenate)"),
    ("--embedding_type", dict(default="positional", choices=["positional", "fourier"]),
     "time embedding: sinusoidal positional of the step index, or random Fourier features"),
    ("--fourier_scale", dict(type=run.POSITIVE_FLOAT, default=16.0),
     "scale of the random Fourier features (--embedding_type fourier)"),
    ("--not_use_tanh", dict(action="store_true", default=False), "no tanh on the generator's output"),
    ("--nz", dict(type=run.POSITIVE_INT, default=100), "size of the latent z the generator draws each step"),
    # a plain int: the one-line message of check_model_options is pinned by the ddgan tests
    ("--num_timesteps", dict(type=int, default=4), "denoising steps T of the chain (>= 1; 4 in the paper)"),
    ("--z_emb_dim", dict(type=run.POSITIVE_INT, default=256), "size of z's embedding (the mapping network's width)"),
    ("--t_emb_dim", dict(type=run.POSITIVE_INT, default=256), "size of the discriminator's time embedding"),
    ("--ngf", dict(type=run.POSITIVE_INT, default=64),
     "base channels of the discriminator (the reference's name, although it sizes D, not G)"),
    ("--dataset", dict(default="cifar10"),
     "name; picks the discriminator as the reference does (cifar10/stackmnist small, lsun/celeba_256 large, other "
     "names: small below 64 px)"),
]


def add_model_args(parser, defaults=True):
    """Generator and diffusion flags. With defaults=False every default is None, so a caller
    can tell what the command line set (sampling fills the rest from the run's options.json)."""
    for flag, kwargs, help_text in _MODEL_ARGS:
        kwargs = dict(kwargs)
        if not defaults:
            reference = kwargs["default"]
            kwargs["default"] = None
            if reference is None:
                help_text += "; default: the training run's value"
            else:
                shown = " ".join(map(str, reference)) if isinstance(reference, list) else reference
                help_text += f"; default: the training run's value, else the reference's {shown}"
        parser.add_argument(flag, help=help_text, **kwargs)
    return parser


def check_model_options(o):
    """One-line refusals for model/diffusion options that cannot work."""
    if o.get("ch_mult") in (None, []):
        raise UserError("--ch_mult is required (e.g. --ch_mult 1 2 2 2 for CIFAR-10)")
    if o["num_timesteps"] is None or o["num_timesteps"] <= 0:
        raise UserError(f"--num_timesteps: {o['num_timesteps']} must be a positive number of steps")
    levels = len(o["ch_mult"])
    if o["image_size"] % 2 ** (levels - 1):
        raise UserError(f"--image_size {o['image_size']} is not divisible by 2^{levels - 1} "
                        f"(--ch_mult has {levels} levels)")
    if o["beta_min"] <= 0 or o["beta_max"] < o["beta_min"]:
        raise UserError(f"--beta_min {o['beta_min']} / --beta_max {o['beta_max']}: need "
                        "0 < beta_min <= beta_max")


def generator_config(o) -> GeneratorConfig:
    return GeneratorConfig.from_options(o)


def build_generator(o) -> NCSNpp:
    check_model_options(o)
    return NCSNpp(generator_config(o))


def discriminator_class(o):
    name = str(o.get("dataset") or "").lower()
    if name in SMALL_D_DATASETS:
        return DiscriminatorSmall
    if name in LARGE_D_DATASETS:
        return DiscriminatorLarge
    return DiscriminatorSmall if o["image_size"] < 64 else DiscriminatorLarge


def build_discriminator(o):
    cls = discriminator_class(o)
    size = o["image_size"]
    halvings = 3 if cls is DiscriminatorSmall else 6  # below 1 px the net cannot work
    if size < 2 ** halvings:
        raise UserError(f"--image_size {size} is too small for the {cls.__name__} discriminator")
    return cls(nc=2 * o["num_channels"], ngf=o["ngf"], t_emb_dim=o["t_emb_dim"])


def build_diffusion(o) -> Diffusion:
    check_model_options(o)
    return Diffusion(o["num_timesteps"], o["beta_min"], o["beta_max"], o["use_geometric"])


def load_weights(model, state_dict, source, what="generator", contradictions=()):
    """checkpoint.load_into, with the flags that decide a generator's shapes named in the error
    (the given ones that contradict the run's options.json first). Released generators (saved
    from DDP, keys prefixed `module.`) load as they are."""
    return checkpoint.load_into(model, state_dict, source, what, hint="check --ch_mult/--num_channels_dae/...",
                                contradictions=contradictions)
