"""What the GAN families share beyond the optimizer epilogue (trainkit/optim.py): the
adversarial losses, freezing D for G's step, and the R1 penalty.

Losses on D's raw logits (softplus forms, finite for any logit and safe under autocast):
bce, the GAN paper's minimax loss for D with the non-saturating -log D(G(z)) for G (DDGAN's
reference trains with exactly these softplus terms); hinge, Lim & Ye 2017 / Miyato et al. 2018.

R1 (Mescheder et al. 2018, "Which training methods for GANs do actually converge?"):
γ/2 · E_real ||∇_x D(x)||², a gradient penalty on real data that trains D only. Lazy
regularisation (StyleGAN2) applies it every k steps; StyleGAN2 (and gans.train) then multiplies
it by k so that its mean weight over steps stays γ/2, while DDGAN's reference does not (ddgan.train
keeps the reference's update).
"""

import contextlib

import torch
import torch.nn.functional as F

from .errors import UserError

LOSSES = ("bce", "hinge")


def check_loss(kind: str) -> str:
    """`kind` if it is one of LOSSES, else one line naming the flag (call before any work)."""
    if kind not in LOSSES:
        raise UserError(f"--loss {kind!r}: choose {' or '.join(LOSSES)}")
    return kind


def d_loss_real(logits, kind="bce"):
    """D's loss on real data, batch mean: -log sigmoid(l) = softplus(-l) (bce), max(0, 1 - l) (hinge)."""
    if check_loss(kind) == "bce":
        return F.softplus(-logits).mean()
    return torch.relu(1 - logits).mean()


def d_loss_fake(logits, kind="bce"):
    """D's loss on generated data, batch mean: -log(1 - sigmoid(l)) = softplus(l) (bce),
    max(0, 1 + l) (hinge)."""
    if check_loss(kind) == "bce":
        return F.softplus(logits).mean()
    return torch.relu(1 + logits).mean()


def g_loss(logits, kind="bce"):
    """G's loss on D's logits of its samples, batch mean: non-saturating softplus(-l) (bce), -l (hinge)."""
    if check_loss(kind) == "bce":
        return F.softplus(-logits).mean()
    return -logits.mean()


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """D's parameters without requires_grad for G's step, put back as they were in a `finally`
    (an exception or a skipped step inside must not leave D frozen for its own next update).
    G's loss still backpropagates through D to G; only the D weight gradients, which G's step
    would compute and throw away, are not built. Use D's raw module inside: its weights do not
    change, so DDP has nothing to synchronise."""
    params = list(module.parameters())
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


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
