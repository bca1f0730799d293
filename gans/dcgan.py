"""DCGAN (Radford, Metz & Chintala 2015) and its class-conditional variant.

Architecture (the paper's, as in the PyTorch DCGAN tutorial seed 003 follows):
  G: z (nz x 1 x 1) -> 4x4 by a 4x4 transposed conv, then one stride-2 transposed conv per
     doubling, channel width halving each time down to `ngf`, BatchNorm + ReLU on every hidden
     layer, tanh on the output.
  D: the mirror image: stride-2 4x4 convs from `ndf` channels up, LeakyReLU(0.2), BatchNorm on
     every hidden layer except the first, and a 4x4 valid conv to one logit.
For 64 px this is exactly the tutorial's network (ngf*8 at 4x4); for 32 px it is the usual
CIFAR variant with one stage fewer (ngf*4 at 4x4). Any power of two from 8 px up is accepted,
so tests run at 8-16 px on a CPU.

28 px data (MNIST, FashionMNIST) is not given its own DCGAN architecture: the data loader resizes
it to 32 px (as seed 000 does for FashionMNIST), so DCGAN flag files use `--image_size 32`. Asking
the network for 28 px is an error that says so. The fully connected models (fcgan.py, --model
gan/cgan) have no size constraint and train at 28 px.

D returns raw logits; the losses (trainkit.gan) apply sigmoid/softplus themselves, which is
numerically safe and works under autocast (BCE-with-logits instead of Sigmoid + BCELoss).

Conditional model ("cdcgan"):
  G: a learned embedding of the label (nz numbers) is concatenated to z (cGAN, Mirza & Osindero).
  D: the label enters with the image: K one-hot label maps are concatenated to its channels
     (the input conditioning of Mirza & Osindero's cGAN). A projection discriminator (Miyato &
     Koyama 2018, used here before) let the generator ignore z: one image per class on the
     digits, the std over z at a fixed label 0.02; with the label on the input it is 0.19 and the
     rows vary (docs/gans.md).
"""

import math

import torch
import torch.nn as nn

from trainkit import checkpoint
from trainkit.errors import UserError

MODEL_KINDS = ("dcgan", "cdcgan")


def num_stages(image_size: int) -> int:
    """Stride-2 stages between 4x4 and `image_size`; UserError for sizes the network cannot make."""
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise UserError(f"--image_size {image_size!r}: must be an integer power of two >= 8")
    if image_size == 28:
        raise UserError(
            "--image_size 28: DCGAN makes powers of two; use --image_size 32 "
            "(the data loader resizes 28 px images to 32 px), or the fully connected --model gan/cgan, "
            "which trains at 28 px"
        )
    if image_size < 8 or image_size & (image_size - 1):
        raise UserError(f"--image_size {image_size}: DCGAN makes powers of two >= 8 (e.g. 32 or 64)")
    return int(math.log2(image_size)) - 2


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"--{name} {value!r}: must be a positive integer")


class Generator(nn.Module):
    def __init__(self, image_size=64, nz=100, ngf=64, channels=3, num_classes=0):
        super().__init__()
        stages = num_stages(image_size)
        for name, value in (("nz", nz), ("ngf", ngf), ("channels", channels)):
            _check_positive(name, value)
        self.image_size, self.nz, self.channels, self.num_classes = image_size, nz, channels, num_classes
        if num_classes:
            self.label_emb = nn.Embedding(num_classes, nz)
        in_ch = nz * 2 if num_classes else nz
        width = ngf * 2 ** (stages - 1)
        layers = [
            nn.ConvTranspose2d(in_ch, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z, y=None):
        """z: (N, nz) or (N, nz, 1, 1); y: (N,) int64 labels for the conditional model."""
        if z.dim() == 2:
            z = z[:, :, None, None]
        if self.num_classes:
            check_labels(y, self.num_classes, len(z))
            z = torch.cat([z, self.label_emb(y)[:, :, None, None].to(z.dtype)], dim=1)
        elif y is not None:
            raise UserError("labels given to an unconditional DCGAN generator (use --model cdcgan)")
        return self.main(z)


def minibatch_std(h):
    """h with one more channel: the std over the batch of each feature and pixel, averaged to one
    number (Karras et al. 2018's minibatch standard deviation, one group). A batch of copies
    gives 0, so D can tell a generator that ignores z from real data of the same class."""
    std = h.float().std(dim=0, unbiased=False).mean() if len(h) > 1 else h.new_zeros(())
    return torch.cat([h, std.to(h.dtype).expand(len(h), 1, *h.shape[2:])], dim=1)


class Discriminator(nn.Module):
    def __init__(self, image_size=64, ndf=64, channels=3, num_classes=0, minibatch_std=False):
        super().__init__()
        self.minibatch_std = bool(minibatch_std)
        stages = num_stages(image_size)
        _check_positive("ndf", ndf)
        _check_positive("channels", channels)
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        width = ndf
        if num_classes:  # the one-hot label maps (a buffer: its key marks a conditional D in a file)
            self.register_buffer("label_onehot", torch.eye(num_classes))
        # The paper leaves BatchNorm off D's input layer (it made training unstable).
        layers = [nn.Conv2d(channels + num_classes, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(stages - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, True),
            ]
            width *= 2
        self.features = nn.Sequential(*layers)
        self.out = nn.Conv2d(width + self.minibatch_std, 1, 4, 1, 0, bias=False)
        init_weights(self)

    def forward(self, x, y=None):
        """x: (N, C, H, W) in [-1, 1]; returns (N,) logits."""
        if x.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise UserError(
                f"discriminator input {tuple(x.shape[1:])}: expected "
                f"{(self.channels, self.image_size, self.image_size)}"
            )
        if self.num_classes:
            check_labels(y, self.num_classes, len(x))
            maps = self.label_onehot[y].to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, maps], dim=1)
        elif y is not None:
            raise UserError("labels given to an unconditional DCGAN discriminator (use --model cdcgan)")
        h = self.features(x)
        return self.out(minibatch_std(h) if self.minibatch_std else h).flatten()


def check_labels(y, num_classes, n):
    if y is None:
        raise UserError(f"the conditional model needs class labels (0..{num_classes - 1})")
    if y.shape != (n,):
        raise UserError(f"labels of shape {tuple(y.shape)}: expected ({n},)")
    if not len(y):
        return
    if y.device.type != "cpu":
        # Reading a device tensor's values stops the host until the device catches up, in every
        # forward pass: on an accelerator the range is asserted on the device, asynchronously
        # (an error surfaces at the next synchronisation). Labels from the host are checked below,
        # before they are copied (gans.trainer checks each batch's on the CPU).
        torch._assert_async(((y >= 0) & (y < num_classes)).all(),
                            f"class label outside the model's classes 0..{num_classes - 1}")
        return
    lo, hi = (int(v) for v in torch.aminmax(y))
    if lo < 0 or hi >= num_classes:
        raise UserError(f"class label {lo if lo < 0 else hi} outside the model's classes 0..{num_classes - 1}")


def init_weights(module):
    """DCGAN paper init: every conv weight ~ N(0, 0.02); BatchNorm scale ~ N(1, 0.02), shift 0.

    G's label embedding is left at N(0, 1) so it sits on the same scale as z.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def checked_classes(model, kinds, conditional, num_classes) -> int:
    """The class count the networks of `model` (one of `kinds`) get: the data's for the
    `conditional` kind, which needs at least 2, and 0 for the other."""
    if model not in kinds:
        raise UserError(f"--model {model!r}: choose one of {', '.join(kinds)}")
    if model != conditional:
        return 0
    if not num_classes or num_classes < 2:
        raise UserError(f"--model {model} needs labelled data with at least 2 classes "
                        "(image files named <label>_<anything>.png, or an npz with arr_1)")
    return num_classes


def create_models(model="dcgan", image_size=64, nz=100, ngf=64, ndf=64, channels=3, num_classes=0,
                  minibatch_std=False):
    """(G, D) for `model` in {dcgan, cdcgan}; the conditional one needs num_classes >= 2.
    minibatch_std: D's last conv also sees the batch's std (`minibatch_std`); off is the paper's D."""
    num_classes = checked_classes(model, MODEL_KINDS, "cdcgan", num_classes)
    G = Generator(image_size, nz, ngf, channels, num_classes)
    D = Discriminator(image_size, ndf, channels, num_classes, minibatch_std)
    return G, D


def generator_kind(state_dict) -> str:
    """'dcgan' or 'cdcgan' from a generator state_dict's keys; '' if it is no DCGAN generator."""
    if not isinstance(state_dict, dict) or "main.0.weight" not in state_dict:
        return ""
    return "cdcgan" if "label_emb.weight" in state_dict else "dcgan"


def generator_config(state_dict, path="checkpoint") -> dict:
    """Architecture of a saved generator, read from its tensor shapes (so a bare model file is
    enough to sample from it): model, image_size, nz, ngf, channels, num_classes."""
    kind = generator_kind(state_dict)
    if not kind:
        raise UserError(f"{path}: not a DCGAN generator state_dict (no 'main.0.weight')")
    convs = sorted(
        (int(k.split(".")[1]), v) for k, v in state_dict.items() if k.startswith("main.") and k.endswith(".weight")
        and v.dim() == 4
    )
    first, last = convs[0][1], convs[-1][1]
    in_ch = first.shape[0]
    config = {
        "model": kind,
        "image_size": 2 ** (len(convs) + 1),
        "nz": in_ch // 2 if kind == "cdcgan" else in_ch,
        "ngf": last.shape[0],
        "channels": last.shape[1],
        "num_classes": state_dict["label_emb.weight"].shape[0] if kind == "cdcgan" else 0,
    }
    return config


def load_generator_state(G, state_dict, path="checkpoint"):
    """Load with strict key and shape checks, turning a mismatch into one line naming the file."""
    kind = generator_kind(state_dict)
    want = "cdcgan" if G.num_classes else "dcgan"
    if not kind:
        raise UserError(f"{path}: not a DCGAN generator state_dict (no 'main.0.weight')")
    if kind != want:
        raise UserError(f"{path}: checkpoint holds a {kind} generator, but --model is {want}")
    _load_strict(G, state_dict, path)


def discriminator_kind(state_dict) -> str:
    """'cdcgan' (one-hot label maps on the input, or the earlier projection layout) or 'dcgan'."""
    return "cdcgan" if "label_onehot" in state_dict or "label_proj.weight" in state_dict else "dcgan"


def load_discriminator_state(D, state_dict, path="checkpoint"):
    if not isinstance(state_dict, dict) or "out.weight" not in state_dict:
        raise UserError(f"{path}: not a DCGAN discriminator state_dict (no 'out.weight')")
    if "label_proj.weight" in state_dict:
        raise UserError(f"{path}: a cdcgan discriminator of the earlier projection layout; this version puts the "
                        "label on D's input, so the run cannot be resumed (its generator still samples)")
    kind = discriminator_kind(state_dict)
    want = "cdcgan" if D.num_classes else "dcgan"
    if kind != want:
        raise UserError(f"{path}: checkpoint holds a {kind} discriminator, but --model is {want}")
    _load_strict(D, state_dict, path)


def _load_strict(module, state_dict, path):
    what = "generator" if isinstance(module, Generator) else "discriminator"
    checkpoint.load_into(module, state_dict, path, what, hint="check --image_size/--nz/--ngf/--ndf")
