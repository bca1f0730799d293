"""What the GAN families share beyond the optimizer epilogue (trainkit/optim.py): the R1 penalty.

R1 (Mescheder et al. 2018, "Which training methods for GANs do actually converge?"):
γ/2 · E_real ||∇_x D(x)||², a gradient penalty on real data that trains D only. Lazy
regularisation (StyleGAN2) applies it every k steps; StyleGAN2 (and gans.train) then multiplies
it by k so that its mean weight over steps stays γ/2, while DDGAN's reference does not (ddgan.train
keeps the reference's update).
"""

import torch


def r1_penalty(d_real, x_real, gamma):
    """gamma/2 * mean over the batch of |dD(x)/dx|^2, differentiable in D's weights (create_graph)
    so that it trains D. `x_real` must require grad and be what `d_real` was computed from (through
    any augmentation)."""
    grad, = torch.autograd.grad(d_real.float().sum(), x_real, create_graph=True)
    return gamma / 2 * grad.pow(2).flatten(1).sum(1).mean()


def r1_due(step: int, every) -> bool:
    """Lazy R1: applied at steps 0, k, 2k, ... (every step when `every` is None or 1)."""
    return every is None or every <= 1 or step % every == 0
