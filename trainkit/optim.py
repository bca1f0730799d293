"""The end of every optimizer step, the same for every family: after the backward passes,
bring fp16 gradients back to their true size, measure their norm, step (or, under fp16 with
inf/NaN gradients, skip the step and lower the loss scale), and update the EMA only on a step
that was taken. A family's `loop.Task.step` calls `finish_step` once per optimizer (a GAN: once
for D, once for G), so this policy is written once.

Statistics, one vocabulary for every family: `grad_norm` and `skipped` for the network that
samples (the diffusion model, a GAN's or DDGAN's generator), `grad_norm_d` and `skipped_d` for
a discriminator (`suffix="_d"`). `grad_norm` is the L2 norm of all gradients together after the
DDP all-reduce and before the step, unscaled; `skipped` is 1.0 on a step fp16 skipped, else 0.0.
"""

import torch


def grad_norm(parameters) -> torch.Tensor:
    """The L2 norm of all gradients together, as a 0-dim tensor on their device (no sync)."""
    parameters = list(parameters)
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros((), device=parameters[0].device if parameters else None)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def finish_step(optimizer, prec, module, *, ema=None, suffix="", log=None, step=None):
    """Step `optimizer` on `module`'s gradients through `prec` (a `trainkit.precision.Precision`)
    and update `ema` (a `trainkit.ema.EMA` of `module`, or None) if the step was taken.

    Returns (stepped, stats): stats holds `grad_norm{suffix}` and `skipped{suffix}` as device
    tensors. `log(message)` (optional) hears of a skipped step; `step` numbers it there."""
    prec.unscale_(optimizer)  # a no-op unless fp16
    norm = grad_norm(module.parameters())
    stepped = prec.step(optimizer)
    if stepped:
        if ema is not None:
            ema.update(module)
    elif log is not None:
        where = f" at step {step}" if step is not None else ""
        log(f"fp16: non-finite gradients{where}, step skipped, loss scale lowered to {prec.scale:g}")
    # a fill on the device, not torch.tensor(number, device=): that is a synchronising
    # host-to-device copy on CUDA, twice per GAN step
    return stepped, {f"grad_norm{suffix}": norm,
                     f"skipped{suffix}": torch.full((), 0.0 if stepped else 1.0, device=norm.device)}


# A discriminator's skill, one key and one meaning for every GAN family: its accuracy on the
# step's real images and fresh fakes, read from the logits of its first forward pass on them,
# before it updates on that batch (a logit > 0 says "real", for the logistic and the hinge
# loss alike). Chance is D_ACCURACY_CHANCE whatever the loss; the loss value is not a measure
# of skill (noisy logits without skill give a logistic loss above 2 ln 2, and a D right 72% of
# the time can sit at exactly 2 ln 2).
D_ACCURACY = "d_acc"
D_ACCURACY_CHANCE = 0.5


def d_accuracy(real_logits, fake_logits) -> torch.Tensor:
    """(share of real logits > 0 + share of fake logits < 0) / 2, a 0-dim tensor (no sync)."""
    real = (real_logits.detach().float() > 0).float().mean()
    fake = (fake_logits.detach().float() < 0).float().mean()
    return (real + fake) / 2
