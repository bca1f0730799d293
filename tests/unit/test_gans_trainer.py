"""The optimisation step in one process: each player's update touches only its own weights."""

import math

import pytest
import torch

from gans import dcgan
from gans.trainer import GANTrainer
from trainkit.errors import UserError


def _trainer(model="cdcgan", **kw):
    torch.manual_seed(0)
    G, D = dcgan.create_models(model, 8, nz=4, ngf=4, ndf=4, channels=1, num_classes=3)
    return GANTrainer(G, D, device="cpu", **kw)


def _batch(n=6, labelled=True):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    y = torch.randint(3, (n,), generator=g) if labelled else None
    return x, y


def _params(m):
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", ["dcgan", "cdcgan"])
def test_d_step_does_not_update_g(model):
    t = _trainer(model)
    g0, d0 = _params(t.G), _params(t.D)
    stats = t.d_step([_batch(labelled=model == "cdcgan")])
    assert _same(_params(t.G), g0)
    assert all(p.grad is None for p in t.G.parameters())  # G ran under no_grad
    assert not _same(_params(t.D), d0)
    assert stats["grad_norm_d"] > 0 and all(torch.isfinite(v) for v in stats.values())
    assert 0 < stats["d_real"] < 1 and 0 < stats["d_fake"] < 1


@pytest.mark.parametrize("model", ["dcgan", "cdcgan"])
def test_g_step_does_not_update_d(model):
    t = _trainer(model)
    x, y = _batch(labelled=model == "cdcgan")
    t.d_step([(x, y)])
    d0 = _params(t.D)
    d_grads = [p.grad.clone() for p in t.D.parameters()]
    g0 = _params(t.G)
    stats = t.g_step([(len(x), y)])
    assert _same(_params(t.D), d0)
    assert all(torch.equal(p.grad, g) for p, g in zip(t.D.parameters(), d_grads))  # no D gradient added
    assert all(p.requires_grad for p in t.D.parameters())  # D unfrozen again
    assert not _same(_params(t.G), g0)
    assert stats["grad_norm"] > 0 and stats["skipped"] == 0


def test_grad_norm_is_the_norm_of_all_gradients():
    t = _trainer("dcgan")
    stats = t.d_step([_batch(labelled=False)])
    # Adam has stepped, but the .grad tensors it used are still there
    expected = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in t.D.parameters())).item()
    assert float(stats["grad_norm_d"]) == pytest.approx(expected, rel=1e-5)


def test_accumulation_averages_micro_batches():
    # Two identical micro-batches must give the gradient of one (losses are divided by k).
    # BatchNorm sees the same batch either way, and G's noise is drawn from the same seed.
    x, _ = _batch(labelled=False)
    grads = []
    for k in (1, 2):
        t = _trainer("dcgan", lr_d=1e-30)
        torch.manual_seed(5)
        z = t.noise(len(x))
        t.noise = lambda n, z=z: z.clone()  # the same fakes in every micro-batch
        t.d_step([(x, None)] * k)
        grads.append(torch.cat([p.grad.flatten() for p in t.D.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-8)


def test_ema_follows_g_and_saves_in_model_layout():
    t = _trainer("cdcgan", ema_rates="0.5")
    x, y = _batch()
    before = _params(t.G)
    t.update([(x, y)])
    after = _params(t.G)
    states = t.state_dicts()
    assert sorted(states) == ["disc", "disc_opt", "ema_0.5_", "model", "opt"]
    ema_sd = states["ema_0.5_"]
    for k in before:  # one update at rate 0.5 from the initial weights
        assert torch.allclose(ema_sd[k], 0.5 * before[k] + 0.5 * after[k], atol=1e-7)
    G2, _ = dcgan.create_models("cdcgan", 8, nz=4, ngf=4, ndf=4, channels=1, num_classes=3)
    dcgan.load_generator_state(G2, ema_sd, "ema.pt")


class ConstantD(torch.nn.Module):
    """A discriminator whose logit is one learnable number b for every image: the losses have
    closed forms in b."""

    def __init__(self, b):
        super().__init__()
        self.b = torch.nn.Parameter(torch.tensor(float(b)))

    def forward(self, x, y=None):
        return self.b.expand(x.shape[0]) + 0 * x.sum()


@pytest.mark.parametrize("loss,d_loss,g_loss", [
    # hinge: D max(0, 1 - b) + max(0, 1 + b), G -b; bce: D softplus(-b) + softplus(b), G softplus(-b)
    ("hinge", 0.0 + 2.5, -1.5),
    ("bce", math.log1p(math.exp(-1.5)) + math.log1p(math.exp(1.5)), math.log1p(math.exp(-1.5))),
])
def test_the_chosen_loss_is_the_one_trained(loss, d_loss, g_loss):
    torch.manual_seed(0)
    G, _ = dcgan.create_models("dcgan", 8, nz=4, ngf=4, ndf=4, channels=1)
    t = GANTrainer(G, ConstantD(1.5), device="cpu", loss=loss, lr_d=1e-30)
    stats = t.update([_batch(labelled=False)])
    assert float(stats["loss_d"]) == pytest.approx(d_loss, rel=1e-6)
    assert float(stats["loss_g"]) == pytest.approx(g_loss, rel=1e-6)


def test_a_bad_loss_is_refused_by_name():
    with pytest.raises(UserError, match="--loss 'ls'"):
        _trainer("dcgan", loss="ls")


def _logit_at_2ln2(right):
    """a > 0 with right * softplus(-a) + (1 - right) * softplus(a) = ln 2: logits of size a, of
    the right sign for a share `right` of the images, give the logistic D loss of chance."""
    def f(a):
        return right * math.log1p(math.exp(-a)) + (1 - right) * math.log1p(math.exp(a)) - math.log(2)
    lo, hi = 1e-6, 10.0  # f < 0 just above 0 (right > 1/2), > 0 far out
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return lo


class ScriptedD(torch.nn.Module):
    """Returns the logits it is given, call by call (d_step shows D the real images first, then
    the fakes), plus a learnable 0 so that D has a gradient to step on."""

    def __init__(self, calls):
        super().__init__()
        self.calls = list(calls)
        self.zero = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, y=None):
        return self.calls.pop(0) + self.zero + 0 * x.sum()


def test_d_accuracy_measures_skill_where_the_loss_cannot():
    """A D right on 18 of 25 real and 18 of 25 fake images, with logits sized so that its
    logistic loss is exactly 2 ln 2 (the loss of chance): d_acc is 0.72. A D with large random
    logits and no skill (loss far above 2 ln 2) has d_acc 1/2 of whatever it got right by luck."""
    a = _logit_at_2ln2(0.72)
    signs = torch.tensor([1.0] * 18 + [-1.0] * 7)
    torch.manual_seed(0)
    G, _ = dcgan.create_models("dcgan", 8, nz=4, ngf=4, ndf=4, channels=1)
    skilled = GANTrainer(G, ScriptedD([a * signs, -a * signs]), device="cpu")
    stats = skilled.d_step([_batch(25, labelled=False)])
    assert float(stats["loss_d"]) == pytest.approx(2 * math.log(2), abs=1e-6)
    assert float(stats["d_acc"]) == pytest.approx(0.72)

    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(25, generator=g) * 5, torch.randn(25, generator=g) * 5
    noisy = GANTrainer(G, ScriptedD([real, fake]), device="cpu")
    stats = noisy.d_step([_batch(25, labelled=False)])
    assert float(stats["loss_d"]) > 2 * math.log(2) + 1
    assert float(stats["d_acc"]) == pytest.approx(((real > 0).float().mean() + (fake < 0).float().mean()) / 2)


def test_d_accuracy_of_micro_batches_is_their_mean():
    torch.manual_seed(0)
    G, _ = dcgan.create_models("dcgan", 8, nz=4, ngf=4, ndf=4, channels=1)
    ones = torch.ones(5)
    # first micro-batch: all right (1.0); second: reals right, fakes wrong (0.5)
    t = GANTrainer(G, ScriptedD([ones, -ones, ones, ones]), device="cpu")
    stats = t.d_step([_batch(5, labelled=False), _batch(5, labelled=False)])
    assert float(stats["d_acc"]) == pytest.approx(0.75)
