"""Every model kind of the family behind one set of functions, so that the trainer, the
samplers and the checks do not care which network they hold.

  dcgan, cdcgan: convolutional (dcgan.py), powers of two >= 8 px
  gan, cgan:     fully connected (fcgan.py), any size

A saved generator or discriminator tells its kind from its keys: the FC networks hold an
`image_shape` buffer, the DCGAN ones `main.*` / `out.*` convs.
"""

from trainkit.errors import UserError

from . import dcgan, fcgan

MODEL_KINDS = dcgan.MODEL_KINDS + fcgan.MODEL_KINDS
CONDITIONAL = ("cdcgan", "cgan")


def check_image_size(model: str, image_size) -> None:
    """UserError for an --image_size the kind cannot make (before any data or run directory)."""
    if model in dcgan.MODEL_KINDS:
        dcgan.num_stages(image_size)
    else:
        fcgan.check_image_size(image_size)


def create_models(model="dcgan", image_size=64, nz=100, ngf=64, ndf=64, channels=3, num_classes=0,
                  minibatch_std=False):
    """(G, D) of any kind; the conditional kinds need num_classes >= 2."""
    if model in dcgan.MODEL_KINDS:
        return dcgan.create_models(model, image_size, nz, ngf, ndf, channels, num_classes, minibatch_std)
    if model in fcgan.MODEL_KINDS:
        return fcgan.create_models(model, image_size, nz, ngf, ndf, channels, num_classes, minibatch_std)
    raise UserError(f"--model {model!r}: choose one of {', '.join(MODEL_KINDS)}")


def kind_of(module) -> str:
    """The model kind of a built G or D."""
    if isinstance(module, (fcgan.FCGenerator, fcgan.FCDiscriminator)):
        return "cgan" if module.num_classes else "gan"
    if isinstance(module, (dcgan.Generator, dcgan.Discriminator)):
        return "cdcgan" if module.num_classes else "dcgan"
    raise TypeError(f"{type(module).__name__} is not a gans model")


def generator_kind(state_dict) -> str:
    """The kind of a generator state_dict; '' if it is none of this family's generators."""
    return fcgan.generator_kind(state_dict) or dcgan.generator_kind(state_dict)


def discriminator_kind(state_dict) -> str:
    kind = fcgan.discriminator_kind(state_dict)
    if kind or not isinstance(state_dict, dict) or "out.weight" not in state_dict:
        return kind
    return dcgan.discriminator_kind(state_dict)


def _not_a(what, path):
    return UserError(f"{path}: not a DCGAN {what} state_dict, nor a fully connected GAN's "
                     f"(no 'main.0.weight'/'out.weight', no 'image_shape')")


def generator_config(state_dict, path="checkpoint") -> dict:
    """Architecture of a saved generator (model, image_size, nz, ngf, channels, num_classes),
    read from the file alone."""
    kind = generator_kind(state_dict)
    if kind in fcgan.MODEL_KINDS:
        return fcgan.generator_config(state_dict, path)
    if kind in dcgan.MODEL_KINDS:
        return dcgan.generator_config(state_dict, path)
    raise _not_a("generator", path)


def build_generator(config: dict):
    """A fresh generator of the architecture `generator_config` returned."""
    args = (config["image_size"], config["nz"], config["ngf"], config["channels"], config["num_classes"])
    if config["model"] in fcgan.MODEL_KINDS:
        return fcgan.FCGenerator(*args)
    return dcgan.Generator(*args)


def _check_kind(module, kind, path, what):
    if not kind:
        raise _not_a(what, path)
    want = kind_of(module)
    if kind != want:
        raise UserError(f"{path}: checkpoint holds a {kind} {what}, but --model is {want}")


def load_generator_state(G, state_dict, path="checkpoint"):
    """Strict load; a state of another kind or shape is one line naming the file."""
    _check_kind(G, generator_kind(state_dict), path, "generator")
    if isinstance(G, fcgan.FCGenerator):
        return fcgan.load_state(G, state_dict, path)
    return dcgan.load_generator_state(G, state_dict, path)


def load_discriminator_state(D, state_dict, path="checkpoint"):
    _check_kind(D, discriminator_kind(state_dict), path, "discriminator")
    if isinstance(D, fcgan.FCDiscriminator):
        return fcgan.load_state(D, state_dict, path)
    return dcgan.load_discriminator_state(D, state_dict, path)
