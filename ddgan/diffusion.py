"""The discrete VP diffusion that DDGAN trains a GAN per step for.

Time grid (paper, App. B): t_k = k/T * (1 - eps) + eps, k = 0..T, eps = 1e-3. The variance of
x(t_k) given x(0) is the VP SDE's 1 - exp(-0.5 t^2 (beta_max - beta_min) - t beta_min), or with
``use_geometric`` beta_min * (beta_max / beta_min) ** t. Per-step betas follow from consecutive
alpha_bars; a beta of 1e-8 is prepended so that index 0 is (almost) the clean image.

Two index conventions are the reference's and are kept because checkpoints depend on them:
- ``q_sample(x0, t)`` with t in 0..T-1 gives the state t steps after index 0 (the cumulative
  product over the T+1 table, including the 1e-8 step), ``q_sample_pairs`` returns
  (x_t, x_{t+1}).
- the posterior at index t is q(x_t | x_{t+1}, x_0), computed from the T betas without the
  prepended one. The generator is fed x_{t+1} with the integer label t (0..T-1).
"""

import torch

EPS_SMALL = 1e-3
FIRST_BETA = 1e-8
LOG_VAR_FLOOR = 1e-20


def time_grid(num_timesteps):
    """t_k for k = 0..T (float64 tensor of length T+1)."""
    k = torch.arange(num_timesteps + 1, dtype=torch.float64)
    return k / num_timesteps * (1.0 - EPS_SMALL) + EPS_SMALL


def marginal_variance(t, beta_min, beta_max, use_geometric=False):
    """Var[x(t) | x(0)] of the continuous process at times t (float64)."""
    if use_geometric:
        return beta_min * (beta_max / beta_min) ** t
    log_mean_coeff = -0.25 * t ** 2 * (beta_max - beta_min) - 0.5 * t * beta_min
    return 1.0 - torch.exp(2.0 * log_mean_coeff)


def beta_table(num_timesteps, beta_min, beta_max, use_geometric=False):
    """Betas of length T+1: [1e-8, beta_1..beta_T] (float64)."""
    alpha_bars = 1.0 - marginal_variance(time_grid(num_timesteps), beta_min, beta_max, use_geometric)
    betas = 1.0 - alpha_bars[1:] / alpha_bars[:-1]
    return torch.cat([torch.tensor([FIRST_BETA], dtype=torch.float64), betas])


def _gather(table, t, ndim):
    """table[t] shaped (N, 1, 1, ...) to broadcast against an N-batch of ndim dims (Diffusion
    keeps its tables on the device instead: Diffusion._gather)."""
    return table.to(t.device)[t].reshape(-1, *([1] * (ndim - 1)))


class Diffusion:
    """All schedule tables as float32 tensors (computed in float64 first)."""

    def __init__(self, num_timesteps, beta_min=0.1, beta_max=20.0, use_geometric=False):
        if num_timesteps <= 0:
            raise ValueError(f"num_timesteps must be positive, got {num_timesteps}")
        self.num_timesteps = num_timesteps
        betas_full = beta_table(num_timesteps, beta_min, beta_max, use_geometric)
        # forward-process tables over the T+1 grid points
        a_s = torch.sqrt(1.0 - betas_full)
        a_s_cum = torch.cumprod(a_s, 0)
        self.sigmas = torch.sqrt(betas_full).float()
        self.a_s = a_s.float()
        self.a_s_cum = a_s_cum.float()
        self.sigmas_cum = torch.sqrt(1.0 - a_s_cum ** 2).float()
        # posterior tables over the T steps (the prepended beta is dropped)
        betas = betas_full[1:]
        alphas = 1.0 - betas
        acp = torch.cumprod(alphas, 0)
        acp_prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
        var = betas * (1.0 - acp_prev) / (1.0 - acp)
        self.betas = betas.float()
        self.alphas_cumprod = acp.float()
        self.alphas_cumprod_prev = acp_prev.float()
        self.posterior_variance = var.float()
        self.posterior_log_variance_clipped = torch.log(var.clamp(min=LOG_VAR_FLOOR)).float()
        self.posterior_mean_coef1 = (betas * torch.sqrt(acp_prev) / (1.0 - acp)).float()
        self.posterior_mean_coef2 = ((1.0 - acp_prev) * torch.sqrt(alphas) / (1.0 - acp)).float()

    def _on(self, name, device):
        """Table `name` on `device`, copied there on first use only: a host table moved in every
        call is a synchronising host-to-device copy on CUDA, 8 per DDGAN step. The host tensors
        stay the tables' truth (the attributes above); the copies are a cache."""
        cache = self.__dict__.setdefault("_device_tables", {})
        source = getattr(self, name)
        hit = cache.get((name, device))
        if hit is None or hit[0] is not source:  # first use, or the attribute was replaced
            hit = cache[(name, device)] = (source, source.to(device))
        return hit[1]

    def _gather(self, name, t, ndim):
        return self._on(name, t.device)[t].reshape(-1, *([1] * (ndim - 1)))

    # forward process -------------------------------------------------------------------------
    def q_sample(self, x_start, t, noise=None):
        """x_t ~ q(x_t | x_0) for integer t in 0..T-1 (per batch element)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        return (self._gather("a_s_cum", t, x_start.ndim) * x_start
                + self._gather("sigmas_cum", t, x_start.ndim) * noise)

    def q_sample_pairs(self, x_start, t, noise=None, noise_next=None):
        """(x_t, x_{t+1}): x_t from q_sample, then one forward step. Draws the step noise first
        and the marginal noise second, the reference's order, when none is given."""
        if noise_next is None:
            noise_next = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise)
        x_tp1 = (self._gather("a_s", t + 1, x_start.ndim) * x_t
                 + self._gather("sigmas", t + 1, x_start.ndim) * noise_next)
        return x_t, x_tp1

    # posterior ---------------------------------------------------------------------------------
    def q_posterior(self, x_0, x_tp1, t):
        """Mean, variance and clipped log-variance of q(x_t | x_{t+1}, x_0)."""
        n = x_tp1.ndim
        mean = (self._gather("posterior_mean_coef1", t, n) * x_0
                + self._gather("posterior_mean_coef2", t, n) * x_tp1)
        return (mean, self._gather("posterior_variance", t, n),
                self._gather("posterior_log_variance_clipped", t, n))

    def sample_posterior(self, x_0, x_tp1, t, noise=None):
        """x_t ~ q(x_t | x_{t+1}, x_0); no noise is added where t == 0 (the last step)."""
        mean, _, log_var = self.q_posterior(x_0, x_tp1, t)
        if noise is None:
            noise = torch.randn_like(x_tp1)
        nonzero = (t != 0).to(x_tp1.dtype).reshape(-1, *([1] * (x_tp1.ndim - 1)))
        return mean + nonzero * torch.exp(0.5 * log_var) * noise

    # sampler -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, generator, x_init, nz, randn=None):
        """T generator steps from x_init = x_T ~ N(0, I).

        randn(shape_without_batch) -> (N, *shape) supplies the random numbers; it is called in the
        reference's order at every step, including the last: latent z, then posterior noise.
        Default: torch.randn on x_init's device (global generator)."""
        n = x_init.shape[0]
        if randn is None:
            def randn(*shape):
                return torch.randn(n, *shape, device=x_init.device)
        x = x_init
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((n,), i, dtype=torch.int64, device=x.device)
            z = randn(nz).to(x.device)
            x_0 = generator(x, t, z)
            noise = randn(*x.shape[1:]).to(x.device)
            x = self.sample_posterior(x_0, x, t, noise).detach()
        return x

