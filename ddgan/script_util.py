"""Flags (train_ddgan.py's names and defaults), model construction and weight loading.

Flag semantics follow the reference exactly, including its quirks that users' commands depend
on: --centered, --resamp_with_conv, --conditional, --fir and --skip_rescale are on by default
and passing the flag turns the option OFF (argparse store_false). Two quirks are fixed: the
reference takes --attn_resolutions and --fir_kernel without a type (a command-line value became
a string); here they are lists of integers ("16", "16 8" or "16,8").
"""

import argparse

from trainkit import checkpoint
from trainkit.errors import UserError

from .diffusion import Diffusion
from .discriminator import DiscriminatorLarge, DiscriminatorSmall
from .ncsnpp import GeneratorConfig, NCSNpp

SMALL_D_DATASETS = ("cifar10", "stackmnist")
LARGE_D_DATASETS = ("lsun", "celeba_256")


class IntList(argparse.Action):
    """nargs='+' integers; each word may itself be a comma list: `16 8` == `16,8`."""

    def __call__(self, parser, namespace, values, option_string=None):
        out = []
        for v in values if isinstance(values, list) else [values]:
            for part in str(v).split(","):
                if part.strip():
                    try:
                        out.append(int(part))
                    except ValueError:
                        parser.error(f"argument {option_string}: {part!r} is not an integer")
        setattr(namespace, self.dest, out)


def add_model_args(parser, defaults=True):
    """Generator and diffusion flags. With defaults=False every default is None, so a caller
    can tell what the command line set (sampling fills the rest from the run's options.json)."""
    d = (lambda v: v) if defaults else (lambda v: None)
    a = parser.add_argument
    a("--image_size", type=int, default=d(32), help="size of image")
    a("--num_channels", type=int, default=d(3), help="channel of image")
    a("--centered", action="store_false", default=d(True),
      help="data in [-1, 1] (default); passing the flag means data in [0, 1]")
    a("--use_geometric", action="store_true", default=d(False))
    a("--beta_min", type=float, default=d(0.1))
    a("--beta_max", type=float, default=d(20.0))
    a("--num_channels_dae", type=int, default=d(128), help="initial channels of the generator")
    a("--n_mlp", type=int, default=d(3), help="layers of the z mapping network")
    a("--ch_mult", nargs="+", action=IntList, default=None,
      help="channel multipliers, one per resolution (required: the reference has no default)")
    a("--num_res_blocks", type=int, default=d(2))
    a("--attn_resolutions", nargs="+", action=IntList, default=d([16]))
    a("--dropout", type=float, default=d(0.0))
    a("--resamp_with_conv", action="store_false", default=d(True), help="passing it turns it off")
    a("--conditional", action="store_false", default=d(True), help="passing it turns it off")
    a("--fir", action="store_false", default=d(True), help="passing it turns FIR off")
    a("--fir_kernel", nargs="+", action=IntList, default=d([1, 3, 3, 1]))
    a("--skip_rescale", action="store_false", default=d(True), help="passing it turns it off")
    a("--resblock_type", default=d("biggan"), choices=["biggan", "ddpm", "biggan_oneadagn"])
    a("--progressive", default=d("none"), choices=["none", "output_skip", "residual"])
    a("--progressive_input", default=d("residual"), choices=["none", "input_skip", "residual"])
    a("--progressive_combine", default=d("sum"), choices=["sum", "cat"])
    a("--embedding_type", default=d("positional"), choices=["positional", "fourier"])
    a("--fourier_scale", type=float, default=d(16.0))
    a("--not_use_tanh", action="store_true", default=d(False))
    a("--nz", type=int, default=d(100))
    a("--num_timesteps", type=int, default=d(4))
    a("--z_emb_dim", type=int, default=d(256))
    a("--t_emb_dim", type=int, default=d(256))
    a("--ngf", type=int, default=d(64))
    a("--dataset", default=d("cifar10"),
      help="name; picks the discriminator as the reference does (cifar10/stackmnist small, "
           "lsun/celeba_256 large, other names: small below 64 px)")
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


def strip_module_prefix(state_dict):
    """Released generators were saved from DistributedDataParallel: keys start with `module.`."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def load_weights(model, state_dict, source, what="generator"):
    """checkpoint.load_into, with the flags that decide a generator's shapes named in the error.
    Released generators (saved from DDP, keys prefixed `module.`) load as they are."""
    return checkpoint.load_into(model, state_dict, source, what, hint="check --ch_mult/--num_channels_dae/...")
