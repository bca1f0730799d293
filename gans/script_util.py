"""What gans.sample and gans.interpolate share: finding and building a saved generator."""

import blobfile as bf
import torch

from trainkit import checkpoint, run, sampling
from trainkit.errors import UserError

from . import models


def generator_path(model_path: str) -> str:
    """A generator file (model*.pt, ema_*.pt, any single file), or for a run directory (or a
    post-hoc EMA folder of trainkit.posthoc_ema) its latest step's sampling weights, by the one
    rule of trainkit.checkpoint.sampling_weights: the file the training loop recorded as
    `sample_weights` (a generator average when the run kept one), else a settled --ema_rate
    average, else the raw generator."""
    if not model_path:
        raise UserError("--model_path is empty: name a model*.pt / ema_*.pt file or a run directory")
    if bf.isdir(model_path):
        ck = checkpoint.resolve(model_path)
        return ck.path(checkpoint.sampling_weights(ck))
    if not bf.exists(model_path):
        raise UserError(f"{model_path}: no such generator file or run directory")
    return model_path


_MODEL_ARG_HELP = dict(
    image_size="the image size in pixels G was trained for",
    nz="G's latent size",
    ngf="G's base width (channels or hidden units)",
    ndf="D's base width (describes D: accepted, not checked)",
    num_channels="image channels G makes: 1 or 3",
)


def add_model_args(parser):
    """The training run's architecture flags, accepted so that one flag file's $MODEL_FLAGS
    serve train, sample and interpolate. The architecture is read from the checkpoint; these
    flags, when given, only check it (--ndf describes D and is not checked)."""
    parser.add_argument("--model", default="", choices=("",) + models.MODEL_KINDS,
                        help="optional check: the checkpoint must hold this model kind (empty: any)")
    for name, what in _MODEL_ARG_HELP.items():
        kind = run.int_range(1, 3) if name == "num_channels" else run.POSITIVE_INT
        parser.add_argument(f"--{name}", type=kind, default=None,
                            help=f"optional check against the checkpoint: {what} (default: not checked)")
    return parser


_CHECKED = {"model": "model", "image_size": "image_size", "nz": "nz", "ngf": "ngf", "num_channels": "channels"}


def load_generator(model_path: str, args=None, device="cpu"):
    """(G in eval mode, its path). The architecture is read from the tensor shapes, so a bare
    file is enough; architecture flags in `args`, when given, must match the file."""
    path = generator_path(model_path)
    sd = checkpoint.load(path)
    config = models.generator_config(sd, path)
    for flag, key in _CHECKED.items():
        given = getattr(args, flag, None)
        if given not in (None, "") and given != config[key]:
            if flag == "model":
                raise UserError(f"{path}: checkpoint holds a {config['model']} generator, but --model is {given}")
            raise UserError(f"{path}: the generator was trained with --{flag} {config[key]}, but --{flag} is {given}")
    G = models.build_generator(config)
    models.load_generator_state(G, sd, path)
    return G.to(device).eval(), path


def check_class_label(G, class_label: int, allow_random: bool):
    """-1 means "draw a label per sample" (when allowed); anything else must be a class of G."""
    if not G.num_classes:
        if class_label not in (-1, None):
            raise UserError(f"--class_label {class_label}: the checkpoint is an unconditional {models.kind_of(G)}")
        return
    if class_label == -1 and allow_random:
        return
    if not 0 <= class_label < G.num_classes:
        raise UserError(f"--class_label {class_label}: outside the model's classes 0..{G.num_classes - 1}")


def seed_latent(seed: int, nz: int, device="cpu") -> torch.Tensor:
    """The latent of sample index 0 of `gans.sample --seed SEED`: interpolations start from
    exactly the images the sampler showed."""
    return sampling.PerSampleRandom(seed, [0], device).randn(nz, 1, 1)[0]
