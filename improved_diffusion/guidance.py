"""Classifier-free guidance (Ho & Salimans 2022) as a model wrapper every sampler can call.

Training with --class_dropout_prob p replaces a label by the null class (the extra last row of
the label embedding) with probability p, so one network learns the conditional model eps(x, c)
and the unconditional eps(x, null). Sampling with --guidance_scale w combines them as
k-diffusion's cond_scale and diffusers' guidance_scale do:

    out = uncond + w (cond - uncond)

w = 1 is the conditional model, w = 0 the unconditional one, w > 1 guidance (the paper's
(1 + w') eps_c - w' eps_u with w' = w - 1). The combination is affine with weights summing to 1,
and x0, eps and v are affine in one another at a fixed x_t, so guiding the raw output guides
each of them alike: one wrapper serves eps, x0 and v models. With learned variances the mean
channels are guided and the conditional rows' variance channels kept (GLIDE's sampler).

GuidedModel calls the network once per call on 2N rows (the N conditional rows, then the same
N with the null label). Under InBlocks (sample.py) it is wrapped per block of rows, so a
sample's rows in the call stay fixed and the npz stays batch-invariant.
"""

import torch
import torch.nn as nn

from trainkit.errors import UserError


class GuidedModel(nn.Module):
    """model(x, t, y) guided at `scale` against the model's null class (`model.null_class`)."""

    def __init__(self, model, scale):
        super().__init__()
        null_class = getattr(model, "null_class", None)
        if null_class is None:
            raise ValueError("classifier-free guidance needs a model trained with --class_dropout_prob > 0")
        self.model = model
        self.scale = float(scale)
        self.null_class = null_class

    def forward(self, x, t, y=None, **kwargs):
        if y is None:
            raise ValueError("classifier-free guidance needs the labels y")
        n = x.shape[0]
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, torch.full_like(y, self.null_class)]),
                          **{k: torch.cat([v, v]) for k, v in kwargs.items()})
        cond, uncond = both[:n], both[n:]
        C = x.shape[1]
        if both.shape[1] == 2 * C:  # learned variances: guide the mean, keep the conditional variance
            mean = uncond[:, :C] + self.scale * (cond[:, :C] - uncond[:, :C])
            return torch.cat([mean, cond[:, C:]], dim=1)
        return uncond + self.scale * (cond - uncond)


def guided(model, scale):
    """The model to sample at guidance `scale`: the model itself at 1 (not a wrapper, so the
    samples are today's bit for bit), else a GuidedModel."""
    return model if float(scale) == 1.0 else GuidedModel(model, scale)


def check_guidance(args):
    """One line naming both flags when --guidance_scale asks for guidance the model cannot give."""
    scale = getattr(args, "guidance_scale", 1.0)
    if scale == 1.0:
        return
    if not args.class_cond:
        raise UserError(f"--guidance_scale {scale:g}: the model is not class-conditional (--class_cond False)")
    if not args.class_dropout_prob:
        raise UserError(f"--guidance_scale {scale:g} needs a model trained with --class_dropout_prob > 0 (a null "
                        "class to guide against); this one was trained with --class_dropout_prob 0")
