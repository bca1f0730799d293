"""Differentiable augmentation of the discriminator's inputs (Zhao et al. 2020, "Differentiable
Augmentation for Data-Efficient GAN Training"), for every GAN family.

`--diffaug color,translation,cutout` is the paper's policy for small data sets:
- color: brightness + (U − 0.5), then saturation × 2U (around each pixel's channel mean), then
  contrast × (U + 0.5) (around each image's mean); one U per image and transform;
- translation: a shift of up to 1/8 of the size in each axis (an integer per image and axis,
  uniform in [−s, s], s = round(size/8)), the uncovered pixels zero;
- cutout: a square of half the size, centred uniformly at random, set to zero.

D sees only augmented images, real and fake alike (each call draws fresh parameters); the
transform is differentiable, so G's loss back-propagates through it to G. `augment(*xs)` applies
one draw to several tensors of the same batch (DDGAN's pair x_t, x_{t+1}). An empty policy is
no transform and draws no random numbers, so training is then bit for bit what it was without.
"""

import torch

from .errors import UserError

POLICIES = ("color", "translation", "cutout")


def parse_policy(text) -> tuple:
    parts = tuple(p for p in str(text or "").replace(" ", "").split(",") if p)
    bad = [p for p in parts if p not in POLICIES]
    if bad:
        raise UserError(f"--diffaug {text}: unknown transform {', '.join(bad)} (choose from {','.join(POLICIES)})")
    return parts


def _uniform(x):
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def _color(xs):
    u = _uniform(xs[0])
    xs = [x + (u - 0.5) for x in xs]  # brightness
    u = _uniform(xs[0]) * 2
    xs = [(x - x.mean(dim=1, keepdim=True)) * u + x.mean(dim=1, keepdim=True) for x in xs]  # saturation
    u = _uniform(xs[0]) + 0.5
    return [(x - x.mean(dim=(1, 2, 3), keepdim=True)) * u + x.mean(dim=(1, 2, 3), keepdim=True) for x in xs]


def _translation(xs, ratio=0.125):
    n, _, h, w = xs[0].shape
    dev = xs[0].device
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    th = torch.randint(-sh, sh + 1, (n, 1, 1), device=dev)
    tw = torch.randint(-sw, sw + 1, (n, 1, 1), device=dev)
    rows = torch.arange(h, device=dev).view(1, h, 1) + th  # the source pixel of each output pixel
    cols = torch.arange(w, device=dev).view(1, 1, w) + tw
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)
    b = torch.arange(n, device=dev).view(n, 1, 1)
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    return [x.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2) * inside.to(x.dtype) for x in xs]


def _cutout(xs, ratio=0.5):
    n, _, h, w = xs[0].shape
    dev = xs[0].device
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # the square's centre: uniform over the image (an even square may hang over an edge by one)
    oh = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=dev)
    ow = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=dev)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    top, left = oh - ch // 2, ow - cw // 2
    hole = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    keep = (~hole).unsqueeze(1)
    return [x * keep.to(x.dtype) for x in xs]


_TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}


def augment(policy, *xs):
    """The policy's transforms, in the paper's order, with one random draw shared by `xs` (NCHW
    tensors of one batch). Returns one tensor for one input, else a list."""
    policy = parse_policy(policy) if isinstance(policy, str) else tuple(policy or ())
    out = list(xs)
    for name in POLICIES:
        if name in policy:
            out = _TRANSFORMS[name](out)
    return out[0] if len(out) == 1 else out


def add_args(parser):
    parser.add_argument("--diffaug", default="", type=_policy_flag,
                        help="differentiable augmentation of D's real and fake inputs (DiffAugment, Zhao et al. "
                             "2020): a comma list of color, translation, cutout ('' = none; the paper's small-data "
                             "policy is color,translation,cutout)")
    return parser


def _policy_flag(text):
    import argparse

    try:
        parse_policy(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None
    return text
