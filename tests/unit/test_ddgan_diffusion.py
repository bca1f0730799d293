"""DDGAN's discrete VP diffusion against closed forms."""

import math

import pytest
import torch

from ddgan.diffusion import Diffusion, beta_table, time_grid

BMIN, BMAX = 0.1, 20.0


def alpha_bar_vp(t):
    return math.exp(-0.5 * t * t * (BMAX - BMIN) - t * BMIN)


def test_time_grid_endpoints_and_spacing():
    t = time_grid(4).tolist()
    assert t[0] == pytest.approx(1e-3) and t[-1] == pytest.approx(1.0)
    assert t == pytest.approx([k / 4 * (1 - 1e-3) + 1e-3 for k in range(5)], abs=1e-15)


@pytest.mark.parametrize("T", [1, 2, 4, 8])
def test_vp_betas_closed_form(T):
    betas = beta_table(T, BMIN, BMAX).tolist()
    assert betas[0] == 1e-8
    for k in range(1, T + 1):
        tk, tprev = k / T * (1 - 1e-3) + 1e-3, (k - 1) / T * (1 - 1e-3) + 1e-3
        assert betas[k] == pytest.approx(1 - alpha_bar_vp(tk) / alpha_bar_vp(tprev), rel=1e-12)


def test_geometric_schedule_uses_geometric_variance():
    T = 4
    betas = beta_table(T, BMIN, BMAX, use_geometric=True).tolist()
    for k in range(1, T + 1):
        tk, tprev = k / T * (1 - 1e-3) + 1e-3, (k - 1) / T * (1 - 1e-3) + 1e-3
        def ab(t):
            return 1 - BMIN * (BMAX / BMIN) ** t
        assert betas[k] == pytest.approx(1 - ab(tk) / ab(tprev), rel=1e-12)


def test_bad_num_timesteps_refused():
    with pytest.raises(ValueError, match="num_timesteps"):
        Diffusion(0)


def test_forward_tables_consistent():
    d = Diffusion(4)
    # a_s_cum is the running product of a_s and sigma_cum^2 = 1 - a_s_cum^2
    assert torch.allclose(d.a_s_cum, torch.cumprod(d.a_s.double(), 0).float(), rtol=1e-6)
    assert torch.allclose(d.sigmas_cum ** 2 + d.a_s_cum ** 2, torch.ones(5), atol=1e-6)
    # marginal at grid point k (k >= 1) is the VP marginal relative to t_0
    for k in range(1, 5):
        tk = k / 4 * (1 - 1e-3) + 1e-3
        expected = math.sqrt(alpha_bar_vp(tk) / alpha_bar_vp(1e-3) * (1 - 1e-8))
        assert d.a_s_cum[k].item() == pytest.approx(expected, rel=1e-6)


def test_posterior_mean_variance_closed_form():
    """Bayes' rule for q(x_t | x_{t+1}, x_0) with q(x_t|x_0) = N(sqrt(ab') x0, 1-ab') and
    q(x_{t+1}|x_t) = N(sqrt(1-beta) x_t, beta), in float64 from the time grid."""
    T = 4
    d = Diffusion(T, BMIN, BMAX)
    betas = beta_table(T, BMIN, BMAX)[1:].tolist()
    x0 = torch.tensor([0.7, -0.3, 0.1, -0.9]).reshape(4, 1, 1, 1)
    xtp1 = torch.tensor([0.2, 1.5, -2.0, 0.4]).reshape(4, 1, 1, 1)
    t = torch.arange(T)
    mean, var, log_var = d.q_posterior(x0, xtp1, t)
    ab_prev = 1.0
    for i in range(T):
        beta = betas[i]
        alpha = 1 - beta
        prec = (1 / (1 - ab_prev) if ab_prev < 1 else math.inf) + alpha / beta
        post_var = 1 / prec
        if ab_prev < 1:
            m = post_var * (math.sqrt(ab_prev) * x0[i].item() / (1 - ab_prev)
                            + math.sqrt(alpha) * xtp1[i].item() / beta)
        else:  # t = 0: x_0 is known exactly
            m = x0[i].item()
        assert mean[i].item() == pytest.approx(m, rel=1e-5, abs=1e-6)
        assert var[i].item() == pytest.approx(post_var, rel=1e-5, abs=1e-12)
        assert log_var[i].item() == pytest.approx(math.log(max(post_var, 1e-20)), rel=1e-5)
        ab_prev *= alpha


def test_sample_posterior_adds_no_noise_at_t0():
    d = Diffusion(4)
    x0, xtp1 = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    t = torch.tensor([0, 1, 2, 3])
    noise = torch.randn(4, 3, 2, 2)
    out = d.sample_posterior(x0, xtp1, t, noise)
    mean, _, log_var = d.q_posterior(x0, xtp1, t)
    assert torch.equal(out[0], mean[0])
    assert torch.allclose(out[1:], (mean + torch.exp(0.5 * log_var) * noise)[1:])


def test_q_sample_pairs_given_noise_and_marginals():
    d = Diffusion(4)
    n = 200_000
    x0 = torch.full((n, 1, 1, 1), 0.5)
    for t_int in range(4):
        t = torch.full((n,), t_int)
        g = torch.Generator().manual_seed(t_int)
        e1, e2 = torch.randn(n, 1, 1, 1, generator=g), torch.randn(n, 1, 1, 1, generator=g)
        xt, xtp1 = d.q_sample_pairs(x0, t, noise=e1, noise_next=e2)
        assert torch.allclose(xt, d.a_s_cum[t_int] * x0 + d.sigmas_cum[t_int] * e1)
        assert torch.allclose(xtp1, d.a_s[t_int + 1] * xt + d.sigmas[t_int + 1] * e2)
        # x_{t+1}'s marginal is q(x_{t+1} | x_0): mean a_cum x0, std sigma_cum (MC, 4.5 sigma)
        for x, k in ((xt, t_int), (xtp1, t_int + 1)):
            mu, sd = d.a_s_cum[k].item() * 0.5, d.sigmas_cum[k].item()
            assert abs(x.mean().item() - mu) < 4.5 * sd / math.sqrt(n) + 1e-6
            assert x.std().item() == pytest.approx(sd, rel=0.01, abs=1e-4)
        # and one step further: Var = a^2 sigma_cum[t]^2 + beta = sigma_cum[t+1]^2 exactly
        a, s = d.a_s[t_int + 1].double(), d.sigmas[t_int + 1].double()
        assert (a ** 2 * d.sigmas_cum[t_int].double() ** 2 + s ** 2).item() == pytest.approx(
            d.sigmas_cum[t_int + 1].item() ** 2, rel=1e-5, abs=1e-7)


def test_sampler_order_of_random_numbers_and_steps():
    """z then posterior noise at every step (t = T-1 .. 0), as the reference draws them."""
    d = Diffusion(3)
    calls, seen_t = [], []

    def randn(*shape):
        calls.append(shape)
        return torch.zeros(2, *shape)

    def generator(x, t, z):
        seen_t.append(t.tolist())
        assert z.shape == (2, 5)
        return torch.ones_like(x) * 0.25

    x = d.sample(generator, torch.zeros(2, 1, 4, 4), nz=5, randn=randn)
    assert seen_t == [[2, 2], [1, 1], [0, 0]]
    assert calls == [(5,), (1, 4, 4)] * 3
    # zero noise and a constant x0 prediction: x follows the posterior means exactly
    expected = 0.0
    for i in (2, 1, 0):
        expected = (d.posterior_mean_coef1[i].item() * 0.25
                    + d.posterior_mean_coef2[i].item() * expected)
    assert torch.allclose(x, torch.full_like(x, expected), atol=1e-6)
