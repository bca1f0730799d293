"""Diffusion math against closed forms, and the UNet against the released checkpoint layout."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from improved_diffusion import gaussian_diffusion as gd
from improved_diffusion.losses import discretized_gaussian_log_likelihood, normal_kl
from improved_diffusion.resample import LossSecondMomentResampler, UniformSampler, create_named_schedule_sampler
from improved_diffusion.respace import SpacedDiffusion, space_timesteps
from improved_diffusion.sample import InBlocks
from improved_diffusion.script_util import (
    create_gaussian_diffusion,
    create_model_and_diffusion,
    model_and_diffusion_defaults,
)
from improved_diffusion.unet import AttentionBlock

KEYS_FILE = Path(__file__).with_name("test_id_cifar10_uncond_keys.txt")


def make_diffusion(T=1000, schedule="linear", mean=gd.ModelMeanType.EPSILON, var=gd.ModelVarType.FIXED_LARGE,
                   loss=gd.LossType.MSE, rescale=False):
    return gd.GaussianDiffusion(betas=gd.get_named_beta_schedule(schedule, T), model_mean_type=mean,
                                model_var_type=var, loss_type=loss, rescale_timesteps=rescale)


# ----- schedules --------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1000, 4000, 50])
def test_linear_schedule_at_chosen_t(T):
    betas = gd.get_named_beta_schedule("linear", T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    scale = 1000 / T
    for t in (0, T // 3, T - 1):
        assert betas[t] == pytest.approx(scale * (1e-4 + (0.02 - 1e-4) * t / (T - 1)), rel=1e-12)


def test_cosine_schedule_matches_alpha_bar_and_is_clipped():
    T, s = 1000, 0.008
    betas = gd.get_named_beta_schedule("cosine", T)
    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = np.cumprod(1 - betas)
    for t in (0, 1, 250, 500, 900):
        assert alphas_cumprod[t] == pytest.approx(f(t + 1) / f(0), rel=1e-10)
    assert betas.max() == 0.999 and betas[-1] == 0.999  # alpha_bar(1) = 0 would give beta = 1


def test_unknown_schedule_raises():
    with pytest.raises(NotImplementedError, match=r"^--noise_schedule quadratic: unknown beta schedule"):
        gd.get_named_beta_schedule("quadratic", 10)


# ----- forward process and posterior ----------------------------------------------------

def test_q_sample_is_the_closed_form():
    d = make_diffusion(T=100, schedule="cosine")
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 40, 99])
    ab = np.cumprod(1 - d.betas)[t.numpy()]
    expected = torch.tensor(np.sqrt(ab)).float()[:, None, None, None] * x0 + \
        torch.tensor(np.sqrt(1 - ab)).float()[:, None, None, None] * noise
    torch.testing.assert_close(d.q_sample(x0, t, noise=noise), expected)
    mean, var, logvar = d.q_mean_variance(x0, t)
    torch.testing.assert_close(var[:, 0, 0, 0], torch.tensor(1 - ab).float())
    torch.testing.assert_close(logvar, torch.log(var))


def test_posterior_is_bayes_rule():
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): product of two Gaussians in x_{t-1}."""
    d = make_diffusion(T=1000, schedule="linear")
    x0 = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    xt = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    t = torch.tensor([1, 10, 500, 999])
    mean, var, logvar = d.q_posterior_mean_variance(x0, xt, t)
    tn = t.numpy()
    beta, alpha = d.betas[tn], 1 - d.betas[tn]
    ab_prev = np.cumprod(1 - d.betas)[tn - 1]
    precision = 1 / (1 - ab_prev) + alpha / beta
    bayes_var = 1 / precision
    def c(a):
        return torch.tensor(a)[:, None, None, None]
    bayes_mean = c(bayes_var) * (c(np.sqrt(ab_prev) / (1 - ab_prev)) * x0 + c(np.sqrt(alpha) / beta) * xt)
    torch.testing.assert_close(mean.double(), bayes_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var[:, 0, 0, 0].double(), torch.tensor(bayes_var), rtol=1e-5, atol=0)
    torch.testing.assert_close(logvar[:, 0, 0, 0].double(), torch.log(torch.tensor(bayes_var)), rtol=1e-5, atol=1e-5)
    # The t = 0 posterior variance is 0; its clipped log uses beta~_1 instead of -inf.
    assert d.posterior_variance[0] == 0
    assert d.posterior_log_variance_clipped[0] == pytest.approx(math.log(d.posterior_variance[1]))


def test_eps_and_xprev_predictions_invert():
    d = make_diffusion(T=200, schedule="cosine")
    x0, eps = torch.randn(3, 1, 3, 3), torch.randn(3, 1, 3, 3)
    t = torch.tensor([1, 50, 199])
    xt = d.q_sample(x0, t, noise=eps)
    torch.testing.assert_close(d._predict_xstart_from_eps(xt, t, eps), x0, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(d._predict_eps_from_xstart(xt, t, x0), eps, rtol=1e-3, atol=1e-3)
    xprev, _, _ = d.q_posterior_mean_variance(x0, xt, t)
    torch.testing.assert_close(d._predict_xstart_from_xprev(xt, t, xprev), x0, rtol=1e-3, atol=1e-3)


# ----- p(x_{t-1}|x_t) ---------------------------------------------------------------------

class ConstModel(torch.nn.Module):
    """Returns a fixed output (a parameter), ignoring its inputs."""

    def __init__(self, out):
        super().__init__()
        self.out = torch.nn.Parameter(out.clone())

    def forward(self, x, t, **kwargs):
        return self.out


def test_learned_range_interpolates_log_variances():
    d = make_diffusion(T=100, var=gd.ModelVarType.LEARNED_RANGE)
    x = torch.randn(2, 3, 2, 2)
    t = torch.tensor([0, 60])
    for v, table in ((-1.0, d.posterior_log_variance_clipped), (1.0, np.log(d.betas))):
        out = torch.cat([torch.zeros_like(x), torch.full_like(x, v)], dim=1)
        res = d.p_mean_variance(ConstModel(out), x, t)
        torch.testing.assert_close(res["log_variance"][:, 0, 0, 0], torch.tensor(table[[0, 60]]).float())
    out = torch.cat([torch.zeros_like(x), torch.zeros_like(x)], dim=1)  # v = 0: the midpoint in log space
    res = d.p_mean_variance(ConstModel(out), x, t)
    mid = 0.5 * (d.posterior_log_variance_clipped[60] + np.log(d.betas[60]))
    assert res["log_variance"][1, 0, 0, 0].item() == pytest.approx(mid, rel=1e-5)


def test_fixed_variances():
    x, t = torch.randn(2, 1, 2, 2), torch.tensor([0, 30])
    large = make_diffusion(T=100, var=gd.ModelVarType.FIXED_LARGE).p_mean_variance(ConstModel(torch.zeros_like(x)),
                                                                                   x, t)
    small_d = make_diffusion(T=100, var=gd.ModelVarType.FIXED_SMALL)
    small = small_d.p_mean_variance(ConstModel(torch.zeros_like(x)), x, t)
    assert large["variance"][1, 0, 0, 0].item() == pytest.approx(small_d.betas[30], rel=1e-6)
    assert large["variance"][0, 0, 0, 0].item() == pytest.approx(small_d.posterior_variance[1], rel=1e-6)
    assert small["variance"][1, 0, 0, 0].item() == pytest.approx(small_d.posterior_variance[30], rel=1e-6)


@pytest.mark.parametrize("mean_type", list(gd.ModelMeanType))
def test_mean_parameterisations_agree_on_the_true_x0(mean_type):
    """A model that outputs the exact eps / x0 / posterior mean / v gives the posterior mean."""
    d = make_diffusion(T=100, mean=mean_type)
    x0, eps = torch.rand(2, 1, 3, 3) * 1.6 - 0.8, torch.randn(2, 1, 3, 3)
    t = torch.tensor([5, 70])
    xt = d.q_sample(x0, t, noise=eps)
    true_mean, _, _ = d.q_posterior_mean_variance(x0, xt, t)
    abar = torch.from_numpy(d.alphas_cumprod[t.numpy()]).float().reshape(-1, 1, 1, 1)
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x0
    out = {gd.ModelMeanType.EPSILON: eps, gd.ModelMeanType.START_X: x0, gd.ModelMeanType.PREVIOUS_X: true_mean,
           gd.ModelMeanType.V: v}[mean_type]
    res = d.p_mean_variance(ConstModel(out), xt, t, clip_denoised=False)
    torch.testing.assert_close(res["mean"], true_mean, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(res["pred_xstart"], x0, rtol=1e-3, atol=1e-3)


# ----- likelihood terms -------------------------------------------------------------------

def test_normal_kl_closed_form():
    m1, m2 = torch.tensor([0.3, -1.0]), torch.tensor([0.3, 2.0])
    lv1, lv2 = torch.tensor([0.5, -0.2]), torch.tensor([0.5, 0.7])
    kl = normal_kl(m1, lv1, m2, lv2)
    assert kl[0].item() == pytest.approx(0.0, abs=1e-7)  # equal Gaussians
    s1, s2 = math.exp(-0.1), math.exp(0.35)
    expected = math.log(s2 / s1) + (s1**2 + 9.0) / (2 * s2**2) - 0.5
    assert kl[1].item() == pytest.approx(expected, rel=1e-6)
    assert normal_kl(torch.zeros(3), 0.0, 0.0, 0.0).abs().max().item() == 0  # float arguments


@pytest.mark.parametrize("mean,log_scale",
                         [(0.0, math.log(0.1)), (0.5, math.log(0.02)), (-0.97, math.log(0.3)), (0.2, 0.0)])
def test_discretized_likelihood_sums_to_one(mean, log_scale):
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    logp = discretized_gaussian_log_likelihood(x, means=torch.full_like(x, mean),
                                               log_scales=torch.full_like(x, log_scale))
    assert torch.exp(logp).sum().item() == pytest.approx(1.0, abs=1e-6)


# ----- respacing ------------------------------------------------------------------------

def test_space_timesteps_documented_values():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim4") == {0, 250, 500, 750}
    steps = sorted(space_timesteps(1000, "10,15,20"))
    assert len(steps) == 45
    # Sections of 334, 333, 333 steps, each strided evenly with both ends included.
    assert steps[:10] == list(range(0, 334, 37))
    assert steps[10:25] == [334, 358, 381, 405, 429, 453, 476, 500, 524, 547, 571, 595, 619, 642, 666]
    assert steps[25:] == [667, 684, 702, 719, 737, 754, 772, 789, 807, 824, 842, 859, 877, 894, 912, 929, 947, 964,
                          982, 999]
    assert space_timesteps(300, [10, 15, 20]) == space_timesteps(300, "10,15,20")
    assert sorted(space_timesteps(300, "10"))[-1] == 299
    with pytest.raises(ValueError):
        space_timesteps(10, "ddim7")
    with pytest.raises(ValueError):
        space_timesteps(10, "20")


def test_spaced_diffusion_with_all_steps_equals_base():
    betas = gd.get_named_beta_schedule("cosine", 50)
    kw = dict(betas=betas, model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=gd.ModelVarType.LEARNED_RANGE,
              loss_type=gd.LossType.RESCALED_MSE, rescale_timesteps=True)
    base, spaced = gd.GaussianDiffusion(**kw), SpacedDiffusion(use_timesteps=range(50), **kw)
    np.testing.assert_allclose(spaced.betas, base.betas, rtol=1e-12)
    np.testing.assert_allclose(spaced.posterior_log_variance_clipped, base.posterior_log_variance_clipped, rtol=1e-12)
    seen = []

    class Model(torch.nn.Module):
        def forward(self, x, t):
            seen.append(t)
            return torch.cat([x * 0.3, torch.tanh(x)], dim=1)

    x, t = torch.randn(2, 3, 4, 4), torch.tensor([0, 37])
    a, b = base.p_mean_variance(Model(), x, t), spaced.p_mean_variance(Model(), x, t)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    torch.testing.assert_close(seen[0], seen[1])  # both feed t * 1000 / 50
    torch.testing.assert_close(seen[0], torch.tensor([0.0, 740.0]))


def test_spaced_diffusion_keeps_alpha_bar_and_feeds_base_timesteps():
    d = create_gaussian_diffusion(steps=1000, noise_schedule="linear", timestep_respacing="ddim10",
                                  rescale_timesteps=False)
    base = create_gaussian_diffusion(steps=1000, noise_schedule="linear")
    assert d.num_timesteps == 10 and d.timestep_map == list(range(0, 1000, 100))
    np.testing.assert_allclose(d.alphas_cumprod, base.alphas_cumprod[::100], rtol=1e-10)
    seen = []
    d.p_mean_variance(lambda x, t: (seen.append(t), torch.zeros_like(x))[1], torch.zeros(1, 3, 2, 2), torch.tensor([3]))
    assert seen[0].tolist() == [300]


# ----- losses -----------------------------------------------------------------------------

def test_hybrid_loss_freezes_the_mean_in_the_vb_term():
    d = make_diffusion(T=100, schedule="cosine", var=gd.ModelVarType.LEARNED_RANGE, loss=gd.LossType.RESCALED_MSE)
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    model = ConstModel(torch.randn(2, 6, 4, 4) * 0.5)
    t, noise = torch.tensor([0, 42]), torch.randn_like(x0)
    terms = d.training_losses(model, x0, t, noise=noise)
    # mse is exactly L_simple on the first C channels
    torch.testing.assert_close(terms["mse"], ((noise - model.out[:, :3]) ** 2).mean(dim=(1, 2, 3)))
    # the vb term equals the unscaled bound times T/1000 (here 0.1)
    xt = d.q_sample(x0, t, noise=noise)
    vb = d._vb_terms_bpd(lambda *a: model.out.detach(), x0, xt, t, clip_denoised=False)["output"]
    torch.testing.assert_close(terms["vb"], vb * 0.1)
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    # gradient of vb reaches only the variance channels
    terms["vb"].sum().backward()
    assert model.out.grad[:, :3].abs().max().item() == 0
    assert model.out.grad[:, 3:].abs().max().item() > 0


def test_kl_losses_and_rescaling():
    x0, noise, t = torch.rand(2, 3, 4, 4) * 2 - 1, torch.randn(2, 3, 4, 4), torch.tensor([0, 9])
    out = torch.randn(2, 6, 4, 4) * 0.3
    kl = make_diffusion(T=10, schedule="cosine", var=gd.ModelVarType.LEARNED_RANGE, loss=gd.LossType.KL)
    rkl = make_diffusion(T=10, schedule="cosine", var=gd.ModelVarType.LEARNED_RANGE, loss=gd.LossType.RESCALED_KL)
    a = kl.training_losses(ConstModel(out), x0, t, noise=noise)["loss"]
    b = rkl.training_losses(ConstModel(out), x0, t, noise=noise)["loss"]
    torch.testing.assert_close(b, a * 10)
    mse = make_diffusion(T=10, schedule="cosine", var=gd.ModelVarType.LEARNED_RANGE, loss=gd.LossType.MSE)
    c = mse.training_losses(ConstModel(out), x0, t, noise=noise)
    torch.testing.assert_close(c["vb"], a)  # MSE: the vb term is not rescaled


def test_bpd_loop_totals_and_prior():
    d = make_diffusion(T=8, schedule="cosine", var=gd.ModelVarType.LEARNED_RANGE)
    x0 = torch.randint(0, 256, (2, 3, 4, 4)).float() / 127.5 - 1
    out = d.calc_bpd_loop(lambda x, t: torch.cat([x * 0.1, torch.zeros_like(x)], dim=1), x0)
    assert out["vb"].shape == out["mse"].shape == out["xstart_mse"].shape == (2, 8)
    torch.testing.assert_close(out["total_bpd"], out["vb"].sum(dim=1) + out["prior_bpd"])
    # prior term: KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)) in bits
    ab = d.alphas_cumprod[-1]
    expected = (0.5 * (-1 - math.log(1 - ab) + (1 - ab) + ab * x0**2)).mean(dim=(1, 2, 3)) / math.log(2)
    torch.testing.assert_close(out["prior_bpd"], expected.float(), rtol=1e-4, atol=1e-6)


# ----- samplers ---------------------------------------------------------------------------

def test_p_sample_adds_no_noise_at_t0_and_ddim_eta0_is_deterministic():
    d = make_diffusion(T=5, schedule="cosine")
    def model(x, t):
        return 0.5 * x
    x = torch.randn(2, 3, 2, 2)
    t0 = torch.zeros(2, dtype=torch.long)
    a = d.p_sample(model, x, t0)["sample"]
    torch.testing.assert_close(a, d.p_mean_variance(model, x, t0)["mean"])
    def g():
        return d.ddim_sample_loop(model, (2, 3, 2, 2), noise=x.clone(), device="cpu")
    torch.testing.assert_close(g(), g())
    # noise_fn routes every draw (x_T and per-step noise) through the caller's generators
    def gen():
        return torch.Generator().manual_seed(3)
    runs = []
    for _ in range(2):
        g1 = gen()
        runs.append(d.p_sample_loop(model, (2, 3, 2, 2), device="cpu",
                                    noise_fn=lambda like: torch.randn(like.shape, generator=g1)))
    torch.testing.assert_close(runs[0], runs[1])


def test_schedule_samplers():
    d = make_diffusion(T=4, schedule="cosine")
    assert isinstance(create_named_schedule_sampler("uniform", d), UniformSampler)
    s = create_named_schedule_sampler("loss-second-moment", d)
    assert isinstance(s, LossSecondMomentResampler)
    np.testing.assert_array_equal(s.weights(), np.ones(4))  # not warmed up
    for k in range(12):  # 12 losses per t: the 10 most recent are kept
        s.update_with_local_losses(torch.arange(4), torch.tensor([1.0, 2.0, 3.0, 4.0]) * (k + 1))
    hist = np.array([np.arange(3, 13) * (i + 1) for i in range(4)], dtype=np.float64)
    w = np.sqrt((hist**2).mean(axis=1))
    w = w / w.sum() * 0.999 + 0.001 / 4
    np.testing.assert_allclose(s.weights(), w)
    np.random.seed(0)
    t, weights = s.sample(1000, "cpu")
    np.testing.assert_allclose(weights.numpy(), 1 / (4 * w[t.numpy()]), rtol=1e-6)
    s2 = LossSecondMomentResampler(d)
    s2.load_state_dict(s.state_dict())
    np.testing.assert_array_equal(s2.weights(), s.weights())
    with pytest.raises(NotImplementedError):
        create_named_schedule_sampler("nope", d)


# ----- UNet ---------------------------------------------------------------------------------

def _cifar10_uncond_50m():
    kw = model_and_diffusion_defaults()
    kw.update(image_size=32, num_channels=128, num_res_blocks=3, learn_sigma=True, dropout=0.3,
              diffusion_steps=4000, noise_schedule="cosine")
    return create_model_and_diffusion(**kw)


def test_cifar10_uncond_50m_state_dict_layout():
    model, diffusion = _cifar10_uncond_50m()
    expected = [line.split() for line in KEYS_FILE.read_text().splitlines() if not line.startswith("#")]
    got = [[k, "x".join(map(str, v.shape))] for k, v in model.state_dict().items()]
    assert got == expected
    assert sum(p.numel() for p in model.parameters()) == 52_546_438
    assert diffusion.num_timesteps == 4000 and diffusion.model_var_type == gd.ModelVarType.LEARNED_RANGE
    assert diffusion.loss_type == gd.LossType.RESCALED_MSE


def test_attention_uses_the_legacy_head_order():
    """openai: qkv reshaped to (B*heads, 3*ch, T), then split into q, k, v; softmax(q.k/sqrt(ch))."""
    torch.manual_seed(0)
    block = AttentionBlock(64, num_heads=4)
    torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    x = torch.randn(2, 64, 4, 4)
    b, c, T, heads = 2, 64, 16, 4
    qkv = block.qkv(block.norm(x.reshape(b, c, T))).reshape(b * heads, 3 * c // heads, T)
    q, k, v = qkv.split(c // heads, dim=1)
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(c // heads), dim=-1)
    h = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, T)
    expected = (x.reshape(b, c, T) + block.proj_out(h)).reshape(x.shape)
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_attention_is_eligible_for_the_fused_sdpa_kernel(monkeypatch):
    """q, k, v reach SDPA with a unit last stride: restricted to the fused (flash) backend,
    forward and backward still run. On strided views SDPA raises 'No available kernel' here
    (and silently takes the 2x slower math path otherwise)."""
    attention = pytest.importorskip("torch.nn.attention")
    block = AttentionBlock(64, num_heads=4)
    x = torch.randn(2, 64, 8, 8, requires_grad=True)
    expected = block(x)
    with attention.sdpa_kernel(attention.SDPBackend.FLASH_ATTENTION):
        out = block(x)
        out.sum().backward()
    torch.testing.assert_close(out, expected)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # bf16 autocast on CPU attends in fp32 (faster there than bf16) and hands bf16 on.
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v):
        seen.append((q.dtype, q.stride()[-1]))
        out = sdpa(q, k, v)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16), attention.sdpa_kernel(attention.SDPBackend.FLASH_ATTENTION):
        out16 = block(x)
    assert seen == [(torch.float32, 1), torch.float32]
    torch.testing.assert_close(out16, expected, rtol=0.05, atol=0.05)


def test_in_blocks_puts_sample_i_in_row_i_mod_block_of_a_fixed_size_call():
    calls = []

    def model(x, t, y=None):
        calls.append((x.shape[0], t.tolist(), y.tolist()))
        return x * 2 + t[:, None]

    x = torch.arange(5.0)[:, None] + 1
    indices = [6, 7, 8, 9, 17]  # block 0 rows 6 and 7, block 1 rows 0 and 1, block 2 row 1
    t = torch.tensor(indices) * 10
    out = InBlocks(model, indices, 8)(x, t, y=torch.tensor(indices))
    torch.testing.assert_close(out, x * 2 + t[:, None].float())
    assert calls == [(8, [0] * 6 + [60, 70], [0] * 6 + [6, 7]),
                     (8, [80, 90] + [0] * 6, [8, 9] + [0] * 6),
                     (8, [0, 170] + [0] * 6, [0, 17] + [0] * 6)]
    calls.clear()
    torch.testing.assert_close(InBlocks(model, indices, 1)(x, t, y=torch.tensor(indices)), out)
    assert [c[0] for c in calls] == [1] * 5


def test_class_conditional_unet_and_checkpointing_give_same_gradients():
    kw = model_and_diffusion_defaults()
    kw.update(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
              class_cond=True, num_classes=10, learn_sigma=True)
    torch.manual_seed(0)
    model, _ = create_model_and_diffusion(**kw)
    kw["use_checkpoint"] = True
    model_ck, _ = create_model_and_diffusion(**kw)
    model_ck.load_state_dict(model.state_dict())
    assert model.label_emb.weight.shape == (10, 128)
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0]), torch.tensor([1, 9])
    for m in (model, model_ck):
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.05) if p.ndim > 1 else None
    model_ck.load_state_dict(model.state_dict())
    outs = []
    for m in (model, model_ck):
        out = m(x, t, y=y)
        assert out.shape == (2, 6, 16, 16)
        out.square().mean().backward()
        outs.append((out.detach(), [p.grad.clone() for p in m.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for g0, g1 in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError):
        model(x, t)  # a class-conditional model needs y


def test_run_directory_samples_the_settled_ema():
    """rate**step is the EMA's leftover share of the initial weights: pick the highest rate under 1%."""
    from trainkit.checkpoint import Checkpoint
    from trainkit.checkpoint import sampling_weights as settled_ema  # no state file: the settled rule

    files = {"model": "m", "ema_0.99_": "a", "ema_0.999_": "b", "ema_0.9999_": "c"}
    assert settled_ema(Checkpoint("d", 600, files)) == "ema_0.99_"        # 0.999**600 = 0.55
    assert settled_ema(Checkpoint("d", 5000, files)) == "ema_0.999_"      # 0.999**5000 = 0.007
    assert settled_ema(Checkpoint("d", 500000, files)) == "ema_0.9999_"   # the paper's long run
    assert settled_ema(Checkpoint("d", 100, files)) == "model"            # none settled yet
    assert settled_ema(Checkpoint("d", 100, {"model": "m"})) == "model"
