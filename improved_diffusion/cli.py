"""Flag handling shared by the entry points: openai's flags, our extensions, run-dir defaults."""

import sys

import blobfile as bf

from trainkit import checkpoint, precision, run
from trainkit.errors import UserError

from .script_util import (
    add_dict_to_argparser,
    args_to_dict,
    create_model_and_diffusion,
    model_and_diffusion_defaults,
    model_extension_defaults,
    one_of,
)

PRECISIONS = one_of(*precision.MODES)

# Help lines of the flags several entry points share (an entry point's own dict wins).
COMMON_HELP = dict(
    model_path="required: a model .pt file (model*, ema_*; openai's too) or a training run directory (its newest "
               "checkpoint's settled EMA, and the model flags of its options.json unless given)",
    data_dir="image folder (class labels from the file names' text before the first '_') or a samples .npz",
    clip_denoised="clip each predicted x_0 to [-1, 1] while denoising",
    precision="autocast precision of the model calls: fp32, fp16 or bf16 (ours)",
    batch_invariant="on the CPU, call the model on fixed blocks of rows, so that the output does not depend on "
                    "--batch_size or the number of ranks; False: whole batches (faster) (ours)",
)
COMMON_TYPES = dict(precision=PRECISIONS, batch_size=run.POSITIVE_INT, num_samples=run.POSITIVE_INT)


def model_keys():
    return list(model_and_diffusion_defaults()) + list(model_extension_defaults())


def build_parser(description, defaults, helps=None, types=None):
    """openai's flags (`defaults` + model/diffusion flags, typed like openai), our model
    extensions, then --logdir/--seed/--dist_timeout. `helps` and `types` (flag -> help line /
    parse-time type) describe and range-check an entry point's own flags."""
    parser = run.ArgumentParser(description=description)
    merged = dict(defaults)
    merged.update(model_and_diffusion_defaults())
    merged.update(model_extension_defaults())
    add_dict_to_argparser(parser, merged, helps={**COMMON_HELP, **(helps or {})},
                          types={**COMMON_TYPES, **(types or {})})
    run.add_run_args(parser)
    return parser


def explicit_flags(argv):
    """Names of the --flags present on the command line (both --k v and --k=v forms)."""
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}


def apply_saved_model_flags(args, saved, argv):
    """Take model/diffusion flags from a training run's options.json unless given explicitly,
    so `--model_path RUN_DIR` alone samples with the architecture the run trained."""
    given = explicit_flags(argv)
    for key in model_keys():
        if key in saved and key not in given and key != "timestep_respacing":
            setattr(args, key, saved[key])
    return args


def trained_flags(state_dict) -> dict:
    """The model flags a checkpoint's tensors fix, for a file without options.json (openai's):
    num_channels and image_channels (the first convolution), learn_sigma (twice the image
    channels out), class_cond and num_classes (a label embedding and its rows)."""
    sd = checkpoint.strip_wrapper_prefixes(state_dict)
    flags = {"class_cond": "label_emb.weight" in sd}
    if flags["class_cond"]:
        flags["num_classes"] = sd["label_emb.weight"].shape[0]
    first, last = sd.get("input_blocks.0.0.weight"), sd.get("out.2.weight")
    if first is not None:
        flags["num_channels"], flags["image_channels"] = first.shape[0], first.shape[1]
        if last is not None:
            flags["learn_sigma"] = last.shape[0] == 2 * first.shape[1]
    return flags


def checkpoint_contradictions(args, state_dict) -> list:
    """The model flags of `args` that contradict what the checkpoint of args.model_path was
    trained with: its run's options.json where there is one, else what its tensors show."""
    keys = [k for k in model_keys() if k != "timestep_respacing"]  # respacing is a sampling choice
    flags = vars(args)
    found = checkpoint.saved_flag_contradictions(args.model_path, flags, keys)
    saved = {k: v for k, v in saved_options(args.model_path).items() if k in keys}
    shown = {k: v for k, v in trained_flags(state_dict).items() if k not in saved}
    if "num_classes" in shown and flags.get("class_dropout_prob", saved.get("class_dropout_prob", 0)):
        shown["num_classes"] -= 1  # the last label row is classifier-free guidance's null class
    return found + checkpoint.flag_contradictions(flags, shown, "the checkpoint")


def resolve_model_file(path, ema_first=True):
    """A .pt file as given, or for a run directory the file of its newest checkpoint that
    trainkit.checkpoint.sampling_weights names (ema_first False: its model file)."""
    if not path:
        raise UserError("--model_path is required (a model .pt file or a training run directory)")
    if bf.isdir(path):
        ck = checkpoint.resolve(path)
        return ck.path(checkpoint.sampling_weights(ck) if ema_first else "model")
    if not bf.exists(path):
        raise UserError(f"--model_path {path}: no such file or directory")
    return path


def create_model_and_diffusion_checked(args):
    """create_model_and_diffusion from parsed flags, with configuration errors as one-line
    UserErrors."""
    try:
        return create_model_and_diffusion(**args_to_dict(args, model_keys()))
    except (ValueError, NotImplementedError) as e:
        raise UserError(f"model flags: {e}") from None


def saved_options(path):
    """options.json of the run a model path belongs to, or {} when it has none (e.g. a released
    checkpoint); a broken one is refused by name, not replaced by the default flags."""
    return run.load_options(path, missing_ok=True)


def argv():
    return sys.argv[1:]
