"""Fully connected GAN (Goodfellow et al. 2014) and its conditional variant (cGAN, Mirza &
Osindero 2014): seed 002's MNIST networks, at any image size.

Architecture (seed 002: fully connected layers, LeakyReLU, latent 100, tanh output):
  G: z (nz) [+ one-hot label] -> 4*ngf -> 8*ngf -> 16*ngf -> C*H*W, LeakyReLU(0.2) between,
     tanh at the end, reshaped to (N, C, H, W).
  D: flatten(x) (C*H*W) [+ one-hot label] -> 16*ndf -> 8*ndf -> 4*ndf -> 1 logit, LeakyReLU(0.2).
With ngf = ndf = 64 the hidden widths are 256/512/1024 (G) and 1024/512/256 (D), the classic
MNIST GAN. No BatchNorm and no dropout: every sample's output depends on its own input only, so
train and eval mode are the same network.

Nothing in the network depends on the image being a power of two (unlike DCGAN's stride-2
stages), so 28 px MNIST trains at 28 px with no resizing; any size and 1 or 3 channels work.

D returns a raw logit like dcgan.Discriminator, so the losses and the trainer are shared.

State dicts: G `net.{0,2,4,6}.{weight,bias}`, D `net.{0,2,4}.{weight,bias}` + `head.{weight,bias}`;
both also hold two int64 buffers, `image_shape` ([C, H, W]) and `classes` (0 for gan), so that a
bare model file tells its architecture (models.generator_config) and can never be mistaken for a
DCGAN's (whose keys start `main.`, `features.`, `out.`).
"""

import torch
import torch.nn as nn

from trainkit import checkpoint
from trainkit.errors import UserError

from .dcgan import _check_positive, check_labels, checked_classes, minibatch_std

MODEL_KINDS = ("gan", "cgan")


def check_image_size(image_size) -> int:
    """Any positive integer: a fully connected network has no size constraint."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UserError(f"--image_size {image_size!r}: must be a positive integer")
    return image_size


def _check_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise UserError(f"num_classes {num_classes!r}: must be 0 (unconditional) or a number of classes")


def one_hot(y, num_classes, dtype):
    return nn.functional.one_hot(y, num_classes).to(dtype)


def _mlp(widths):
    """Linear layers between consecutive widths, LeakyReLU(0.2) after each."""
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2, True)]
    return layers


# Initialisation: PyTorch's default Linear init (uniform, bound 1/sqrt(fan_in)) is kept. It
# scales each layer to its fan-in, which here runs from 100 to 3*H*W; DCGAN's fixed N(0, 0.02)
# was chosen for 4x4 convs with fan-ins of a few hundred to a few thousand and would make the
# first G layer (fan-in ~100) nearly 3x too small. It is also what a course notebook like seed
# 002's gets when it builds nn.Linear layers and does not re-initialise them.


class FCGenerator(nn.Module):
    def __init__(self, image_size=28, nz=100, ngf=64, channels=1, num_classes=0):
        super().__init__()
        check_image_size(image_size)
        for name, value in (("nz", nz), ("ngf", ngf), ("channels", channels)):
            _check_positive(name, value)
        _check_classes(num_classes)
        self.image_size, self.nz, self.channels, self.num_classes = image_size, nz, channels, num_classes
        self.register_buffer("image_shape", torch.tensor([channels, image_size, image_size], dtype=torch.int64))
        self.register_buffer("classes", torch.tensor(num_classes, dtype=torch.int64))
        hidden = [4 * ngf, 8 * ngf, 16 * ngf]
        self.net = nn.Sequential(*_mlp([nz + num_classes, *hidden]),
                                 nn.Linear(hidden[-1], channels * image_size * image_size), nn.Tanh())

    def forward(self, z, y=None):
        """z: (N, nz) or (N, nz, 1, 1); y: (N,) int64 labels for the conditional model."""
        if z.dim() == 4 and z.shape[2:] == (1, 1):
            z = z.flatten(1)
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise UserError(f"latent of shape {tuple(z.shape)}: expected (N, {self.nz}) or (N, {self.nz}, 1, 1)")
        if self.num_classes:
            check_labels(y, self.num_classes, len(z))
            z = torch.cat([z, one_hot(y, self.num_classes, z.dtype)], dim=1)
        elif y is not None:
            raise UserError("labels given to an unconditional GAN generator (use --model cgan)")
        return self.net(z).view(len(z), self.channels, self.image_size, self.image_size)


class FCDiscriminator(nn.Module):
    def __init__(self, image_size=28, ndf=64, channels=1, num_classes=0, minibatch_std=False):
        super().__init__()
        check_image_size(image_size)
        _check_positive("ndf", ndf)
        _check_positive("channels", channels)
        _check_classes(num_classes)
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.minibatch_std = bool(minibatch_std)
        self.register_buffer("image_shape", torch.tensor([channels, image_size, image_size], dtype=torch.int64))
        self.register_buffer("classes", torch.tensor(num_classes, dtype=torch.int64))
        hidden = [16 * ndf, 8 * ndf, 4 * ndf]
        self.net = nn.Sequential(*_mlp([channels * image_size * image_size + num_classes, *hidden]))
        # --minibatch_std: the logit layer also sees the batch's mean feature std (one number per
        # sample, the same for all), as dcgan.Discriminator's last conv does
        self.head = nn.Linear(hidden[-1] + self.minibatch_std, 1)

    def forward(self, x, y=None):
        """x: (N, C, H, W) in [-1, 1]; returns (N,) logits."""
        if x.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise UserError(
                f"discriminator input {tuple(x.shape[1:])}: expected "
                f"{(self.channels, self.image_size, self.image_size)}"
            )
        h = x.flatten(1)
        if self.num_classes:
            check_labels(y, self.num_classes, len(x))
            h = torch.cat([h, one_hot(y, self.num_classes, h.dtype)], dim=1)
        elif y is not None:
            raise UserError("labels given to an unconditional GAN discriminator (use --model cgan)")
        h = self.net(h)
        return self.head(minibatch_std(h) if self.minibatch_std else h).flatten()


def create_models(model="gan", image_size=28, nz=100, ngf=64, ndf=64, channels=1, num_classes=0,
                  minibatch_std=False):
    """(G, D) for `model` in {gan, cgan}; the conditional one needs num_classes >= 2."""
    num_classes = checked_classes(model, MODEL_KINDS, "cgan", num_classes)
    G = FCGenerator(image_size, nz, ngf, channels, num_classes)
    D = FCDiscriminator(image_size, ndf, channels, num_classes, minibatch_std)
    return G, D


def _kind(state_dict, last_key) -> str:
    if not isinstance(state_dict, dict) or not all(k in state_dict for k in ("image_shape", "classes", last_key)):
        return ""
    return "cgan" if int(state_dict["classes"]) else "gan"


def generator_kind(state_dict) -> str:
    """'gan' or 'cgan' from a generator state_dict; '' if it is no FC GAN generator."""
    return _kind(state_dict, "net.6.weight")


def discriminator_kind(state_dict) -> str:
    return _kind(state_dict, "head.weight")


def generator_config(state_dict, path="checkpoint") -> dict:
    """Architecture of a saved generator from its buffers and first layer's shape:
    model, image_size, nz, ngf, channels, num_classes."""
    kind = generator_kind(state_dict)
    if not kind:
        raise UserError(f"{path}: not a fully connected GAN generator state_dict (no 'image_shape'/'net.6.weight')")
    channels, height, width = (int(v) for v in state_dict["image_shape"].tolist())
    if height != width:
        raise UserError(f"{path}: generator of {height}x{width} images; only square images are supported")
    num_classes = int(state_dict["classes"])
    first = state_dict["net.0.weight"]  # (4*ngf, nz + num_classes)
    return {"model": kind, "image_size": height, "nz": first.shape[1] - num_classes,
            "ngf": first.shape[0] // 4, "channels": channels, "num_classes": num_classes}


def load_state(module, state_dict, path="checkpoint"):
    """Strict load of an FC G or D, turning a mismatch into one line naming the file. The int64
    buffers are compared by value too (strict loading would just overwrite them)."""
    what = "generator" if isinstance(module, FCGenerator) else "discriminator"
    sd = checkpoint.checked_state_dict(module, state_dict, path, what, hint="check --image_size/--nz/--ngf/--ndf")
    for name, flag in (("image_shape", "--image_size/--num_channels"), ("classes", "the number of classes")):
        own, saved = getattr(module, name).tolist(), sd[name].tolist()
        if own != saved:
            raise UserError(f"{path}: {what} was built for {name} {saved}, this model for {own} (check {flag})")
    module.load_state_dict(sd, strict=True)
    return module
