"""Unit tests of the DCGAN networks, losses and latent interpolation (no processes, no data)."""

import math

import pytest
import torch
import torch.nn as nn

from gans import dcgan
from trainkit import gan, interpolation
from trainkit.errors import UserError


@pytest.mark.parametrize("image_size", [8, 16, 32, 64])
@pytest.mark.parametrize("model", ["dcgan", "cdcgan"])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_per_image_size(image_size, model, channels):
    G, D = dcgan.create_models(model, image_size, nz=7, ngf=4, ndf=4, channels=channels, num_classes=3)
    z = torch.randn(5, 7)
    y = torch.tensor([0, 1, 2, 0, 1]) if model == "cdcgan" else None
    x = G(z, y)
    assert x.shape == (5, channels, image_size, image_size)
    assert x.abs().max() <= 1  # tanh output
    assert G(z[:, :, None, None], y).shape == x.shape  # (N, nz, 1, 1) accepted too
    assert D(x, y).shape == (5,)
    # the shapes tell the architecture back (what gans.sample relies on)
    cfg = dcgan.generator_config(G.state_dict())
    assert cfg == {"model": model, "image_size": image_size, "nz": 7, "ngf": 4, "channels": channels,
                   "num_classes": 3 if model == "cdcgan" else 0}


def test_64px_matches_the_dcgan_tutorial_parameter_counts():
    # The PyTorch DCGAN tutorial (seed 003's starting point) reports these exact sizes for
    # nz=100, ngf=ndf=64, 3 channels, 64 px.
    G, D = dcgan.create_models("dcgan", 64)
    assert sum(p.numel() for p in G.parameters()) == 3576704
    assert sum(p.numel() for p in D.parameters()) == 2765568
    # 64 px: 4x4 holds ngf*8 channels; 32 px: one stage fewer, ngf*4
    assert G.main[0].weight.shape == (100, 512, 4, 4)
    G32, _ = dcgan.create_models("dcgan", 32)
    assert G32.main[0].weight.shape == (100, 256, 4, 4)


def test_init_statistics_follow_the_paper():
    torch.manual_seed(0)
    G, D = dcgan.create_models("cdcgan", 64, num_classes=10)
    convs = [m.weight for net in (G, D) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    w = torch.cat([c.flatten() for c in convs])
    assert w.numel() > 6e6
    # N(0, 0.02): with millions of draws the sample moments are within a fraction of a percent
    assert abs(w.mean().item()) < 1e-4
    assert abs(w.std().item() - 0.02) < 2e-4
    for c in convs:  # every layer, not just the pooled mass
        assert abs(c.std().item() - 0.02) < 0.004
    bns = [m for net in (G, D) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    gamma = torch.cat([b.weight.flatten() for b in bns])
    assert abs(gamma.mean().item() - 1) < 0.003 and abs(gamma.std().item() - 0.02) < 0.003
    assert all(torch.all(b.bias == 0) for b in bns)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.features[:2])  # none on D's input layer
    assert torch.equal(D.label_onehot, torch.eye(10))  # the label maps D sees beside the image
    assert abs(G.label_emb.weight.std().item() - 1) < 0.1  # on the scale of z


def test_conditional_label_reaches_the_output():
    torch.manual_seed(0)
    G, D = dcgan.create_models("cdcgan", 16, nz=8, ngf=4, ndf=4, channels=1, num_classes=10)
    G.eval(), D.eval()
    z = torch.randn(1, 8).repeat(10, 1)
    y = torch.arange(10)
    with torch.no_grad():
        x = G(z, y)
        # same z, ten labels -> ten different images
        # fresh N(0, 0.02) weights with eval-mode BatchNorm give small outputs: compare the
        # label effect to the output's own scale
        diffs = [(x[i] - x[0]).abs().max().item() for i in range(1, 10)]
        assert min(diffs) > 0.05 * x.abs().max().item() > 0
        logits = D(x[:1].repeat(10, 1, 1, 1), y)
        assert len(set(round(v, 7) for v in logits.tolist())) == 10


def test_projection_discriminator_of_earlier_runs_is_refused_by_name():
    _, D = dcgan.create_models("cdcgan", 8, nz=4, ngf=2, ndf=2, channels=1, num_classes=10)
    old = {"label_proj.weight": torch.zeros(10, 4), "out.weight": torch.zeros(1, 4, 4, 4)}
    with pytest.raises(UserError, match="old.pt: a cdcgan discriminator of the earlier projection layout"):
        dcgan.load_discriminator_state(D, old, "old.pt")


def test_unconditional_model_ignores_num_classes_and_rejects_labels():
    G, D = dcgan.create_models("dcgan", 8, nz=4, ngf=2, ndf=2, num_classes=10)
    assert G.num_classes == 0 and not hasattr(G, "label_emb")
    with pytest.raises(UserError, match="unconditional"):
        G(torch.randn(2, 4), torch.tensor([0, 1]))


@pytest.mark.parametrize("size,match", [(28, "use --image_size 32"), (12, "powers of two"), (4, "powers of two"),
                                        (48, "powers of two"), ("32", "integer")])
def test_image_sizes_the_architecture_cannot_make(size, match):
    with pytest.raises(UserError, match=match) as e:
        dcgan.create_models("dcgan", size)
    assert "\n" not in str(e.value) and "--image_size" in str(e.value)


def test_bad_labels_and_model_kinds():
    G, D = dcgan.create_models("cdcgan", 8, nz=4, ngf=2, ndf=2, num_classes=10)
    z = torch.randn(2, 4)
    with pytest.raises(UserError, match="class label 10 outside the model's classes 0..9"):
        G(z, torch.tensor([3, 10]))
    with pytest.raises(UserError, match="class label -1"):
        D(torch.zeros(2, 3, 8, 8), torch.tensor([-1, 0]))
    with pytest.raises(UserError, match="needs class labels"):
        G(z)
    with pytest.raises(UserError, match="--model 'gan'"):
        dcgan.create_models("gan", 8)
    with pytest.raises(UserError, match="at least 2 classes"):
        dcgan.create_models("cdcgan", 8, num_classes=0)
    with pytest.raises(UserError, match="expected"):
        D(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]))


def test_checkpoint_of_the_other_model_kind_is_refused():
    Gc, Dc = dcgan.create_models("cdcgan", 8, nz=4, ngf=2, ndf=2, num_classes=10)
    Gu, Du = dcgan.create_models("dcgan", 8, nz=4, ngf=2, ndf=2)
    with pytest.raises(UserError, match="m.pt: checkpoint holds a cdcgan generator, but --model is dcgan"):
        dcgan.load_generator_state(Gu, Gc.state_dict(), "m.pt")
    with pytest.raises(UserError, match="holds a dcgan generator, but --model is cdcgan"):
        dcgan.load_generator_state(Gc, Gu.state_dict(), "m.pt")
    with pytest.raises(UserError, match="holds a cdcgan discriminator"):
        dcgan.load_discriminator_state(Du, Dc.state_dict(), "d.pt")
    with pytest.raises(UserError, match="not a DCGAN generator"):
        dcgan.load_generator_state(Gu, {"input_blocks.0.0.weight": torch.zeros(1)}, "unet.pt")
    G16, _ = dcgan.create_models("dcgan", 16, nz=4, ngf=2, ndf=2)
    with pytest.raises(UserError, match=r"m.pt: generator weights do not fit .* unexpected: main.4.weight"):
        dcgan.load_generator_state(Gu, G16.state_dict(), "m.pt")
    G3, _ = dcgan.create_models("dcgan", 8, nz=4, ngf=3, ndf=2)
    with pytest.raises(UserError,
                       match=r"--ngf.*shape \(checkpoint vs flags\): main.0.weight \(4, 3, 4, 4\) vs \(4, 2, 4, 4\)"):
        dcgan.load_generator_state(Gu, G3.state_dict(), "m.pt")
    dcgan.load_generator_state(Gc, Gc.state_dict(), "m.pt")  # the right kind loads


def test_losses_against_closed_forms():
    zero = torch.zeros(4)
    assert (gan.d_loss_real(zero, "bce") + gan.d_loss_fake(zero, "bce")).item() == pytest.approx(2 * math.log(2))
    assert gan.g_loss(zero, "bce").item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = torch.sigmoid
    expected = -(torch.log(sig(real)).mean() + torch.log(1 - sig(fake)).mean())
    total = gan.d_loss_real(real, "bce") + gan.d_loss_fake(fake, "bce")
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert gan.g_loss(fake, "bce").item() == pytest.approx(-torch.log(sig(fake)).mean().item(), rel=1e-6)
    # hinge: mean(relu(1 - r)) + mean(relu(1 + f)) = (0 + 2)/2 + (1.5 + 0)/2
    assert (gan.d_loss_real(real, "hinge") + gan.d_loss_fake(fake, "hinge")).item() == pytest.approx(1.75)
    assert gan.g_loss(fake, "hinge").item() == pytest.approx(1.25)
    # the BCE form stays finite where sigmoid saturates
    extreme = gan.d_loss_real(torch.tensor([-200.0]), "bce") + gan.d_loss_fake(torch.tensor([200.0]), "bce")
    assert torch.isfinite(extreme)
    with pytest.raises(UserError, match="--loss 'wgan'"):
        gan.d_loss_real(real, "wgan")


def test_lerp_and_slerp():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    for f in (interpolation.lerp, interpolation.slerp):
        assert torch.allclose(f(a, b, 0.0), a) and torch.allclose(f(a, b, 1.0), b)
    assert torch.allclose(interpolation.slerp(a, b, 0.5), (a + b) / math.sqrt(2))
    assert torch.allclose(interpolation.lerp(a, b, 0.5), (a + b) / 2)
    # on the great circle: the angle to a grows linearly with t, norm stays 1
    for t in (0.1, 0.3, 0.7):
        p = interpolation.slerp(a, b, t)
        assert p.norm().item() == pytest.approx(1.0, abs=1e-6)
        assert math.acos(p[0].item()) == pytest.approx(t * math.pi / 2, abs=1e-6)
    # parallel vectors fall back to lerp instead of dividing by sin(0)
    assert torch.allclose(interpolation.slerp(a, 2 * a, 0.5), 1.5 * a)
    torch.manual_seed(0)
    za, zb = torch.randn(100, 1, 1), torch.randn(100, 1, 1)
    mid = interpolation.slerp(za, zb, 0.5)
    assert mid.shape == za.shape and mid.dtype == za.dtype


def test_minibatch_std_gives_d_the_batch_diversity():
    """With --minibatch_std D's last conv sees one more channel, the batch's mean feature std:
    0 for a batch of copies, so the same image scores differently in a varied batch; off, D's
    score (BatchNorm in eval mode) does not depend on the batch."""
    torch.manual_seed(0)
    h = torch.randn(5, 3, 2, 2)
    extra = dcgan.minibatch_std(h)[:, -1]
    assert torch.allclose(extra, h.std(0, unbiased=False).mean().expand(5, 2, 2))
    assert dcgan.minibatch_std(h[:1].repeat(5, 1, 1, 1))[:, -1].abs().max() == 0
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    copies = x[:1].repeat(4, 1, 1, 1)
    width = dcgan.create_models("dcgan", 8, nz=4, ngf=2, ndf=2, channels=1)[1].out.weight.shape[1]
    for on in (True, False):
        _, D = dcgan.create_models("dcgan", 8, nz=4, ngf=2, ndf=2, channels=1, minibatch_std=on)
        D.eval()
        assert D.out.weight.shape[1] == width + on
        torch.nn.init.normal_(D.out.weight)
        with torch.no_grad():
            varied, same = D(x)[0], D(copies)[0]
        assert (not torch.isclose(varied, same)) if on else torch.isclose(varied, same)
