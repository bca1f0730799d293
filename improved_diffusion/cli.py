"""Flag handling shared by the entry points: openai's flags, our extensions, run-dir defaults."""

import sys

import blobfile as bf

from trainkit import checkpoint, run
from trainkit.errors import UserError

from .script_util import add_dict_to_argparser, model_and_diffusion_defaults, model_extension_defaults

def model_keys():
    return list(model_and_diffusion_defaults()) + list(model_extension_defaults())


def build_parser(description, defaults):
    """openai's flags (`defaults` + model/diffusion flags, typed like openai), our model
    extensions, then --logdir/--seed/--dist_timeout."""
    parser = run.ArgumentParser(description=description)
    merged = dict(defaults)
    merged.update(model_and_diffusion_defaults())
    merged.update(model_extension_defaults())
    add_dict_to_argparser(parser, merged)
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


def settled_ema(ck):
    """The checkpoint's EMA to sample from, or "model" when none has settled yet.

    The EMA starts from the initial weights and keeps a share rate**step of them, so after 600
    steps a 0.999 average is still half initial noise while 0.99 has forgotten it. Take the
    highest rate whose leftover share is under 1% (for a long run, the paper's 0.9999)."""
    rates = {}
    for prefix in ck.prefixes():
        if prefix.startswith("ema_") and prefix.endswith("_"):
            try:
                rates[float(prefix[4:-1])] = prefix
            except ValueError:
                continue
    settled = [r for r in rates if r ** max(ck.step, 0) < 0.01]
    return rates[max(settled)] if settled else "model"


def resolve_model_file(path, ema_first=True):
    """A .pt file as given, or for a run directory its newest checkpoint's settled EMA (else model)."""
    if not path:
        raise UserError("--model_path is required (a model .pt file or a training run directory)")
    if bf.isdir(path):
        ck = checkpoint.resolve(path)
        if not ema_first:
            return ck.path("model")
        recorded = (ck.state or {}).get("sample_weights")  # what the training loop chose
        return ck.path(recorded if recorded and ck.has(recorded) else settled_ema(ck))
    if not bf.exists(path):
        raise UserError(f"--model_path {path}: no such file or directory")
    return path


def saved_options(path):
    """options.json of the run a model path belongs to, or {} (e.g. a released checkpoint)."""
    try:
        return run.load_options(path)
    except UserError:
        return {}


def argv():
    return sys.argv[1:]
