"""What the GAN families share beyond the optimizer epilogue (trainkit/optim.py): the R1 penalty.

R1 (Mescheder et al. 2018, "Which training methods for GANs do actually converge?"):
γ/2 · E_real ||∇_x D(x)||², a gradient penalty on real data that trains D only. Lazy
regularisation (StyleGAN2) applies it every k steps; StyleGAN2 (and gans.train) then multiplies
it by k so that its mean weight over steps stays γ/2, while DDGAN's reference does not (ddgan.train
keeps the reference's update).
"""

import torch


def r1_penalty(d_real, x_real, gamma, precision=None):
    """gamma/2 * mean over the batch of |dD(x)/dx|^2, differentiable in D's weights (create_graph)
    so that it trains D. `x_real` must require grad and be what `d_real` was computed from (through
    any augmentation).

    `precision`: D's trainkit.precision.Precision. Under fp16 the gradient is taken of the
    loss-scaled output and divided by the scale afterwards, as GradScaler does for the loss: D's
    backward runs in fp16 under autocast, and unscaled its input gradients (about 1e-8 for a
    small D near convergence) underflow to 0, so R1 would silently vanish. The scale is D's own
    (a device tensor: no read); if the scaled gradients overflow, R1 is inf and the step is
    skipped with the scale lowered, like any fp16 overflow."""
    if precision is None or not precision.scaler.is_enabled():
        grad, = torch.autograd.grad(d_real.float().sum(), x_real, create_graph=True)
    else:
        # the mean times the scale seeds each sample's backward with scale/N, as the scaled D
        # loss (a batch mean) does: when D's loss backward fits in fp16, this one does too
        # (the sum times the scale would seed scale itself, 2^16 = inf in fp16 at the start)
        scale = precision.scaler.scale(torch.ones((), dtype=torch.float32, device=d_real.device))
        grad, = torch.autograd.grad(d_real.float().mean() * scale, x_real, create_graph=True)
        grad = grad * (d_real.numel() / scale)
    return gamma / 2 * grad.pow(2).flatten(1).sum(1).mean()


def r1_due(step: int, every) -> bool:
    """Lazy R1: applied at steps 0, k, 2k, ... (every step when `every` is None or 1)."""
    return every is None or every <= 1 or step % every == 0
