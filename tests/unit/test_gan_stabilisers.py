"""Stabilised GANs (gans and ddgan): DiffAugment (trainkit.diffaug), R1 (trainkit.gan), the
half-life generator average (trainkit.ema.HalfLifeEMA), and with all of them off, the training
step of before they existed, bit for bit."""

import hashlib
import json

import pytest
import torch

from ddgan import train as ddgan_train
from ddgan import trainer as ddgan_trainer
from ddgan.diffusion import Diffusion
from ddgan.discriminator import DiscriminatorSmall
from ddgan.ncsnpp import GeneratorConfig, NCSNpp
from gans import dcgan
from gans import script_util as gans_util
from gans.trainer import GANTrainer
from trainkit import checkpoint, diffaug, ema, gan

DDGAN_TINY = ["--image_size", "8", "--num_channels", "1", "--num_channels_dae", "8", "--ch_mult", "1", "2",
              "--num_res_blocks", "1", "--attn_resolutions", "4", "--nz", "4", "--z_emb_dim", "8",
              "--t_emb_dim", "8", "--n_mlp", "1", "--ngf", "2", "--num_timesteps", "3", "--dataset", "digits",
              "--batch_size", "4"]


def _fingerprint(modules) -> str:
    """sha256 of every state_dict tensor's float64 sum and sum of squares, as exact hex floats."""
    out = []
    for m in modules:
        for p in m.state_dict().values():
            d = p.detach().double()
            out.append((d.sum().item().hex(), d.square().sum().item().hex()))
    return hashlib.sha256(json.dumps(out).encode()).hexdigest()


def _gans(model="dcgan", seed=0, **kw):
    torch.manual_seed(seed)
    G, D = dcgan.create_models(model, 8, nz=4, ngf=4, ndf=4, channels=1, num_classes=3)
    return GANTrainer(G, D, device="cpu", **kw)


def _gans_steps(t, model, n=3):
    g = torch.Generator().manual_seed(1)
    for s in range(n):
        x = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
        y = torch.randint(3, (6,), generator=g)
        t.step((x, y if model == "cdcgan" else None), s, 0)
    return t


def _ddgan(*extra):
    o = vars(ddgan_train.create_parser().parse_args(DDGAN_TINY + list(extra)))
    torch.manual_seed(0)
    g = NCSNpp(GeneratorConfig.from_options(o))
    d = DiscriminatorSmall(nc=2, ngf=2, t_emb_dim=8)
    with torch.no_grad():  # fresh init is ~0 at the outputs; random weights give real gradients
        for p in list(g.parameters()) + list(d.parameters()):
            p.normal_(0, 0.3)
    return ddgan_trainer.Trainer(o, g, d, Diffusion(3), torch.device("cpu"))


def _ddgan_steps(tr, n=3):
    gen = torch.Generator().manual_seed(1)
    for s in range(n):
        tr.step((torch.rand(4, 1, 8, 8, generator=gen) * 2 - 1, None), s, 0)
    return tr


# Written by the code before the stabilisers existed (commit 88fe428), with these exact runs:
# three steps of a tiny dcgan / cdcgan (gans) and of a tiny DDGAN with lazy R1 (every 2 steps).
BEFORE = {
    "dcgan": "af46775e50846eaf7ba3f40ae65824ee33ad79ea213824afbfe413ea26fadbc8",
    "cdcgan": "64f8052f18742ec901e683c2bf47e0fc976b08aeba42f3f769d9bcd094709ac5",
    "ddgan": "30f0f38dfa87b761bc54a447daa3bd56e286e26623526fe53f794fe74ae7ed17",
}


@pytest.mark.parametrize("model", ["dcgan", "cdcgan"])
def test_gans_step_with_the_stabilisers_off_is_the_step_of_before(model):
    t = _gans_steps(_gans(model, diffaug_policy="", r1_gamma=0.0, ema_kimg=0.0), model)
    assert _fingerprint([t.G, t.D]) == BEFORE[model]


def test_ddgan_step_with_the_stabilisers_off_is_the_step_of_before():
    # DDGAN's convolutions round differently across torch releases (the same code gives another
    # fingerprint on torch 2.8, setup.py's floor): the recorded one is torch 2.14's.
    if not torch.__version__.startswith("2.14."):
        pytest.skip(f"the flags-off DDGAN fingerprint was recorded on torch 2.14, this is {torch.__version__}")
    tr = _ddgan_steps(_ddgan("--lazy_reg", "2", "--r1_gamma", "0.5"))
    assert _fingerprint([tr.g_raw, tr.d_raw]) == BEFORE["ddgan"]


# --- DiffAugment ---------------------------------------------------------------------------

def test_gradients_flow_through_the_augmentation_to_g():
    """G's loss reaches G through every transform: a G step with augmentation on moves G, and
    the gradient of D(augment(G(z))) in G's weights is that of the composed function."""
    torch.manual_seed(0)
    G, _ = dcgan.create_models("dcgan", 8, nz=4, ngf=4, ndf=4, channels=3)
    z = torch.randn(5, 4, 1, 1)
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):
        G.zero_grad()
        torch.manual_seed(1)
        out = diffaug.augment(policy, G(z))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [p.grad for p in G.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), policy
        assert sum(g.abs().sum() for g in grads) > 0, policy
    t = _gans("dcgan", diffaug_policy="color,translation,cutout")
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    t.g_step([(6, None)])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t.G.parameters())
    assert any(not torch.equal(before[k], v) for k, v in t.G.state_dict().items())


def test_color_is_brightness_saturation_contrast_with_the_papers_ranges():
    x = torch.rand(4, 3, 6, 6) * 2 - 1
    torch.manual_seed(3)
    got = diffaug.augment("color", x)
    torch.manual_seed(3)
    u1, u2, u3 = (torch.rand(4, 1, 1, 1) for _ in range(3))
    want = x + (u1 - 0.5)
    want = (want - want.mean(1, keepdim=True)) * (2 * u2) + want.mean(1, keepdim=True)
    want = (want - want.mean((1, 2, 3), keepdim=True)) * (u3 + 0.5) + want.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_translation_shifts_by_at_most_an_eighth_with_zero_fill():
    torch.manual_seed(0)
    x = torch.arange(1, 16 * 16 + 1, dtype=torch.float32).view(1, 1, 16, 16).repeat(64, 2, 1, 1)
    out = diffaug.augment("translation", x)
    shifts = set()
    for img, src in zip(out, x):
        found = [(dh, dw) for dh in range(-2, 3) for dw in range(-2, 3)
                 if torch.equal(img, _shifted(src, dh, dw))]
        assert len(found) == 1  # exactly one integer shift of at most 16/8 = 2 pixels explains it
        shifts.add(found[0])
    assert len(shifts) > 10  # the shifts vary over the batch


def _shifted(src, dh, dw):
    """out[h, w] = src[h + dh, w + dw], zero where that is outside."""
    out = torch.zeros_like(src)
    h, w = src.shape[-2:]
    out[:, max(0, -dh):h - max(0, dh), max(0, -dw):w - max(0, dw)] = \
        src[:, max(0, dh):h - max(0, -dh), max(0, dw):w - max(0, -dw)]
    return out


def test_cutout_zeroes_one_square_of_half_the_size():
    torch.manual_seed(0)
    x = torch.ones(200, 2, 8, 8)
    out = diffaug.augment("cutout", x)
    full = 0
    for img in out:
        assert torch.equal(img[0], img[1])  # one hole for all channels
        rows, cols = torch.nonzero(img[0] == 0, as_tuple=True)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == h * w and h <= 4 and w <= 4  # a (possibly clipped) 4x4 square
        full += int(h == 4 and w == 4)
    assert 0 < full < 200


def test_ddgan_pairs_share_one_draw_and_an_empty_policy_draws_nothing():
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(0)
    a, b = diffaug.augment("color,translation,cutout", x, x.clone())
    assert torch.equal(a, b) and not torch.equal(a, x)
    state = torch.get_rng_state()
    assert diffaug.augment("", x) is x and torch.equal(torch.get_rng_state(), state)
    with pytest.raises(Exception, match="unknown transform zoom"):
        diffaug.parse_policy("color,zoom")


def test_ddgan_g_step_backpropagates_through_the_augmentation():
    tr = _ddgan("--diffaug", "color,translation,cutout")
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    tr.g_step(x)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tr.g_raw.parameters() if p.requires_grad)
    assert sum(p.grad.abs().sum() for p in tr.g_raw.parameters() if p.grad is not None) > 0
    # and D does see augmented pairs: another D output than without
    torch.manual_seed(0)
    plain = _ddgan()
    torch.manual_seed(7)
    s_aug = tr.d_step(x)
    torch.manual_seed(7)
    s_plain = plain.d_step(x)
    assert s_aug["errD_real"] != s_plain["errD_real"]


# --- R1 ------------------------------------------------------------------------------------

class LinearD(torch.nn.Module):
    """D(x) = w·x + b: its input gradient is w for every image, so R1 = γ/2·||w||²."""

    def __init__(self, size=8, channels=1):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(channels * size * size))
        self.b = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, y=None):
        return x.flatten(1) @ self.w + self.b


def test_r1_is_its_closed_form_on_a_linear_d():
    torch.manual_seed(0)
    D = LinearD()
    x = torch.randn(5, 1, 8, 8, requires_grad=True)
    penalty = gan.r1_penalty(D(x), x, gamma=0.3)
    assert penalty.item() == pytest.approx(0.3 / 2 * D.w.pow(2).sum().item(), rel=1e-6)
    penalty.backward()  # and it trains D: d/dw γ/2||w||² = γ w
    torch.testing.assert_close(D.w.grad, 0.3 * D.w.detach(), rtol=1e-5, atol=1e-7)


def test_gans_lazy_r1_every_k_steps_multiplied_by_k():
    torch.manual_seed(0)
    G, _ = dcgan.create_models("dcgan", 8, nz=4, ngf=4, ndf=4, channels=1)
    t = GANTrainer(G, LinearD(), device="cpu", r1_gamma=0.5, lazy_reg=3, lr_d=1e-30)
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    seen = []
    for step in range(7):
        t.updates = step
        w = t.D.w.detach().clone()
        stats = t.d_step([(x[:3], None), (x[3:], None)])
        seen.append("r1" in stats)
        if "r1" in stats:
            assert stats["r1"].item() == pytest.approx(3 * 0.5 / 2 * w.pow(2).sum().item(), rel=1e-5)
    assert seen == [True, False, False, True, False, False, True]
    # the penalty's gradient reached D: with R1 the D gradient is the loss's plus 3·γ·w
    t.updates = 0
    t.opt_d.param_groups[0]["lr"] = 0.0
    torch.manual_seed(9)  # the same fakes in both D steps
    t.d_step([(x, None)])
    with_r1 = t.D.w.grad.clone()
    t.updates = 1
    torch.manual_seed(9)
    t.d_step([(x, None)])
    torch.testing.assert_close(with_r1 - t.D.w.grad, 3 * 0.5 * t.D.w.detach(), rtol=1e-4, atol=1e-5)


# --- the generator's half-life average ------------------------------------------------------

def test_halflife_average_follows_stylegan2_adas_beta_with_ramp_up():
    model = torch.nn.Linear(3, 1, bias=False)
    avg = ema.HalfLifeEMA(model, kimg=0.05, rampup=0.5, images_per_step=10)  # 50 images, ramp 0.5
    want = None
    for step in range(12):
        theta = torch.full((1, 3), float(step) ** 1.5)
        with torch.no_grad():
            model.weight.copy_(theta)
        cur = 10 * step  # images seen before the step
        beta = 0.5 ** (10 / max(min(50.0, cur * 0.5), 1e-8))
        want = theta if want is None else beta * want + (1 - beta) * theta  # step 0: beta = 0, a copy
        avg.update(model)
        torch.testing.assert_close(avg.shadow[0], want, rtol=1e-6, atol=1e-6)
    assert avg.nimg == 120 and avg.beta() == pytest.approx(0.5 ** (10 / 50))


def test_gans_trained_with_ema_kimg_sample_it_by_default(tmp_path):
    t = _gans_steps(_gans("dcgan", ema_kimg=0.01, images_per_step=6), "dcgan", n=2)
    assert t.sample_weights(2) == "ema_kimg0.01_"
    states = t.state_dicts()
    assert "ema_kimg0.01_" in states and t.trainer_state()["halflife_ema"] == {"nimg": 12, "kimg": 0.01}
    state = dict(t.trainer_state(), sample_weights=t.sample_weights(2))
    checkpoint.save(str(tmp_path), 2, states, state)
    assert gans_util.generator_path(str(tmp_path)) == str(tmp_path / "ema_kimg0.01_000002.pt")
    G, _ = gans_util.load_generator(str(tmp_path))
    for k, v in G.state_dict().items():
        assert torch.equal(v, states["ema_kimg0.01_"][k])


def test_gans_trained_with_a_settled_ema_rate_sample_it():
    """The rule of improved_diffusion: the highest rate whose share of the initial weights is
    under 1%; before that, the raw generator."""
    t = _gans("dcgan", ema_rates="0.5,0.9")
    assert t.sample_weights(3) == "model"
    assert t.sample_weights(10) == "ema_0.5_"
    assert t.sample_weights(50) == "ema_0.9_"


def test_ddgan_ema_kimg_is_its_sampling_weights_and_flags_are_checked():
    tr = _ddgan_steps(_ddgan("--ema_kimg", "0.02", "--ema_rampup", "0"), n=2)
    assert tr.sample_weights(2) == "ema_kimg0.02_" and "ema_kimg0.02_" in tr.state_dicts()
    assert tr.halflife.nimg == 8 and tr.halflife.rampup is None
    with pytest.raises(Exception, match="--ema_kimg -1"):
        ddgan_train.check_options(vars(ddgan_train.create_parser().parse_args(DDGAN_TINY + ["--ema_kimg", "-1"])))


@pytest.mark.slow
def test_a_ddgan_run_with_the_stabilisers_samples_its_average_and_a_posthoc_folder(tmp_path, digits):
    """ddgan.train with --diffaug, --ema_kimg and --ema_std on 2 ranks: the run samples its
    half-life average by default, and ddgan.sample on a post-hoc folder draws the reconstructed
    generator's images."""
    import numpy as np

    import helpers
    from _support.flags import DDGAN_FLAGS as FLAGS
    from _support.flags import DDGAN_SMALL as SMALL
    from _support.flags import DDGAN_SMALL_MODEL as SMALL_MODEL
    from ddgan import sample as ddgan_sample
    from trainkit import posthoc_ema

    run_dir = tmp_path / "run"
    proc = helpers.launch("mpiexec", 2, "ddgan.train", "--data_dir", digits(16), "--batch_size", 4, *SMALL,
                          "--max_steps", 4, "--save_interval", 4, "--diffaug", "color,translation,cutout",
                          "--ema_kimg", "0.1", "--ema_std", "0.1", "--ema_snapshot_interval", 2, "--logdir", run_dir,
                          flag_files=[FLAGS])
    assert proc.returncode == 0, helpers.describe(proc)
    ck = checkpoint.resolve(str(run_dir))
    assert ck.state["sample_weights"] == "ema_kimg0.1_" and ck.state["halflife_ema"]["nimg"] == 32
    assert ddgan_sample.pick_weights(ck, "auto")[0] == "ema_kimg0.1_"
    assert posthoc_ema.main([str(run_dir), "--sigma_rel", "0.2", "--out", str(tmp_path / "ph")]) == 0
    folder = tmp_path / "ph" / "sigma_rel_0.2"
    proc = helpers.launch("local", 1, "ddgan.sample", "--model_path", folder, "--num_samples", 3, *SMALL_MODEL,
                          "--logdir", tmp_path / "s", flag_files=[FLAGS])
    assert proc.returncode == 0, helpers.describe(proc)
    assert "ema_posthoc0.2_000004.pt" in proc.stdout
    images = np.load(tmp_path / "s" / "samples_3x16x16x1.npz")["arr_0"]
    raw = helpers.launch("local", 1, "ddgan.sample", "--model_path", run_dir, "--weights", "raw", "--num_samples", 3,
                         *SMALL_MODEL, "--logdir", tmp_path / "r", flag_files=[FLAGS])
    assert raw.returncode == 0, helpers.describe(raw)
    assert not np.array_equal(images, np.load(tmp_path / "r" / "samples_3x16x16x1.npz")["arr_0"])
