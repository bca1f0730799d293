"""Fast deterministic samplers of the probability-flow ODE of a trained VP diffusion.

The model is trained on integer timesteps t = 0 .. T-1 with x_t = alpha_t x_0 + sigma_t eps,
alpha_t^2 = abar_t, sigma_t^2 = 1 - abar_t. The samplers work with the half log-SNR
lambda = log(alpha / sigma), continued between the timesteps by linear interpolation of
lambda in t (`NoiseLevels`); at an integer t it gives the table's abar_t exactly. They visit
`steps` noise levels from t = T-1 down to t = 0 (`time_points`) and then step on to the clean
data (sigma = 0): `steps` steps in all.

- ddim: Song et al. 2021 (eta = 0), which is first-order DPM-Solver++:
  x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) x0(x_t, t),  h = lambda_s - lambda_t.
- dpmpp_2m: DPM-Solver++(2M), Lu et al. 2022, Algorithm 2 (multistep, data prediction). The
  first step is first order; later steps replace x0 by
  D_i = (1 + 1/(2 r_i)) x0_{i-1} - 1/(2 r_i) x0_{i-2},  r_i = h_{i-1} / h_i.
  The last step, onto sigma = 0 (lambda = +inf, where r_i is 0), is first order, as in the
  paper's reference solver ("lower order final"): it returns the data prediction.
- dpmpp_2m_sde: SDE-DPM-Solver++(2M), the same paper's solver of the diffusion SDE (Lu et al.
  2022; eta = 1), in data prediction:
  x_s = (sigma_s / sigma_t) e^{-h} x_t + alpha_s (1 - e^{-2h}) D_i + sigma_s sqrt(1 - e^{-2h}) z,
  z ~ N(0, I) fresh each step, D_i as dpmpp_2m's (first order at the first step, x0 itself).
  Its first-order step is the DDPM posterior q(x_s | x_t, x0) with x0 the model's (mean and
  variance exactly, so over all T timesteps it is the ancestral sampler with the small, beta-tilde
  variances); the noise it adds at every step corrects the model's errors as ancestral sampling
  does, which the ODE cannot. Its randomness comes from the caller's `noise_fn`.
- heun: EDM's deterministic sampler (Karras et al. 2022, Algorithm 1 without churn) on the VP
  model through sigma(t) = sqrt((1 - abar) / abar) = e^{-lambda} and x_sigma = x_t / alpha_t,
  for which dx/dsigma = (x - D(x; sigma)) / sigma with D the model's x0 prediction. Euler steps
  corrected by the trapezoid rule; the last step, onto sigma = 0, is Euler (it returns D).
- ddpm: the ancestral sampler of GaussianDiffusion (p_sample_loop), over the diffusion's own
  (possibly respaced) timesteps.

Control (improved_diffusion.interpolate, improved_diffusion.edit): `invert` runs the ddim ODE
backwards from data to x_T (DDIM inversion), and `t_start` starts the ODE samplers at an
intermediate timestep from a given x_t, which `sdedit` (SDEdit, Meng et al. 2022) uses after
noising the data to it.

Model evaluations per sample (`nfe`): ddim N, dpmpp_2m N, dpmpp_2m_sde N, heun 2N - 1, ddpm N.
The only randomness of ddim, dpmpp_2m and heun is x_T (the caller's `noise`), that of
dpmpp_2m_sde and ddpm also each step's `noise_fn`, and every operation outside the model is
elementwise with coefficients shared by the batch, so a sample depends on its own x_T, noises
(and label) only.
"""

import math

import numpy as np
import torch

from .gaussian_diffusion import ModelMeanType, ModelVarType

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "dpmpp_2m_sde", "heun")
STEP_SAMPLERS = ("ddim", "dpmpp_2m", "dpmpp_2m_sde", "heun")  # place --steps points over the model's timesteps
ODE_SAMPLERS = ("ddim", "dpmpp_2m", "heun")  # deterministic: x_T decides the sample
TIME_SCHEDULES = ("uniform", "logsnr", "karras")
KARRAS_RHO = 7.0
# openai's betas_for_alpha_bar clips each beta at 0.999: the cosine schedule's last step(s) jump
# in lambda (100 steps: lambda(98) = -4.16, lambda(99) = -7.62) where the schedule is no longer
# the cosine's. logsnr and karras spacing from lambda(T-1) then spent most levels inside that
# jump (logsnr-10: 3 of 10 in t in (98, 99]; karras-10: 5 of 10, two steps for t in [0, 71.6]).
CLIPPED_BETA = 0.999 - 1e-6


def nfe(sampler: str, steps: int) -> int:
    """Model evaluations per sample of `sampler` run for `steps` steps."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    return 2 * steps - 1 if sampler == "heun" else steps


class NoiseLevels:
    """The noise levels of a diffusion's timesteps, continued to fractional timesteps.

    `t` here is the model's own timestep number (for a SpacedDiffusion, the base process's, as
    _WrappedModel feeds it); lambda(t) is linear between integer timesteps. `model_input(t)` is
    the timestep value the network is called with (t * 1000 / T with rescale_timesteps).
    """

    def __init__(self, diffusion):
        abar = np.asarray(diffusion.alphas_cumprod, dtype=np.float64)
        self.timesteps = np.asarray(getattr(diffusion, "timestep_map", range(len(abar))), dtype=np.float64)
        self.lambdas = 0.5 * (np.log(abar) - np.log1p(-abar))  # decreasing in t
        base_steps = getattr(diffusion, "original_num_steps", diffusion.num_timesteps)
        self.input_scale = 1000.0 / base_steps if diffusion.rescale_timesteps else 1.0
        self.t_min, self.t_max = float(self.timesteps[0]), float(self.timesteps[-1])
        self.lambda_max, self.lambda_min = float(self.lambdas[0]), float(self.lambdas[-1])
        # The noisiest timestep before the trailing run of clipped steps (t_max without one).
        betas = 1.0 - abar[1:] / abar[:-1]
        clipped = 0
        while clipped < len(betas) and betas[len(betas) - 1 - clipped] >= CLIPPED_BETA:
            clipped += 1
        self.t_unclipped = float(self.timesteps[-1 - clipped])

    def lam(self, t):
        """lambda at (fractional) timesteps t in [t_min, t_max]."""
        return np.interp(t, self.timesteps, self.lambdas)

    def t_of_lambda(self, lam):
        """The timestep of half log-SNR lam (the inverse of `lam`)."""
        return np.interp(lam, self.lambdas[::-1], self.timesteps[::-1])

    def model_input(self, t):
        return t * self.input_scale

    @staticmethod
    def alpha_sigma(lam):
        """(alpha, sigma) of half log-SNR lam: alpha^2 = sigmoid(2 lam), sigma^2 = sigmoid(-2 lam)."""
        return math.sqrt(1.0 / (1.0 + math.exp(-2.0 * lam))), math.sqrt(1.0 / (1.0 + math.exp(2.0 * lam)))


def time_points(levels: NoiseLevels, steps: int, schedule: str = "uniform", t_start=None):
    """The `steps` noise levels a sampler visits before the clean data, noisiest first, as
    (timesteps, lambdas): float64 arrays from t_start (default t_max, the noisiest timestep) to
    t_min (t = 0).

    uniform: evenly spaced in t; logsnr: evenly spaced in lambda; karras: EDM's
    sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, rho = 7,
    with sigma = e^{-lambda} and sigma_max the level of t_start. One step visits t_start only.
    A t_start below t_max is where a partial decode (SDEdit) starts: the same rule over the
    part of the process below it.

    Where the schedule's last betas are clipped (openai's cosine), logsnr and karras visit t_max
    first and space the other steps - 1 levels from the last unclipped timestep
    (`NoiseLevels.t_unclipped`): the sampler still starts from pure noise at t_max, and one step
    crosses the clipped jump in lambda instead of several.
    """
    if schedule not in TIME_SCHEDULES:
        raise ValueError(f"unknown time schedule {schedule!r}: one of {', '.join(TIME_SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    t_hi = levels.t_max if t_start is None else float(t_start)
    if not levels.t_min <= t_hi <= levels.t_max:
        raise ValueError(f"t_start {t_hi} is outside the timesteps {levels.t_min:g}..{levels.t_max:g}")
    lam_lo = levels.lambda_min if t_start is None else float(levels.lam(t_hi))
    if schedule != "uniform" and steps > 2 and levels.t_unclipped < t_hi:
        ts, lams = time_points(levels, steps - 1, schedule, t_start=levels.t_unclipped)
        return np.concatenate([[t_hi], ts]), np.concatenate([[lam_lo], lams])
    u = np.linspace(0.0, 1.0, steps) if steps > 1 else np.zeros(1)
    if schedule == "uniform":
        ts = t_hi + u * (levels.t_min - t_hi)
        lams = levels.lam(ts)
    else:
        if schedule == "logsnr":
            lams = lam_lo + u * (levels.lambda_max - lam_lo)
        else:
            hi, lo = math.exp(-lam_lo / KARRAS_RHO), math.exp(-levels.lambda_max / KARRAS_RHO)
            lams = -KARRAS_RHO * np.log(hi + u * (lo - hi))
        ts = levels.t_of_lambda(lams)
    # The ends exactly, whatever the rounding of the interpolations.
    ts[0], lams[0] = t_hi, lam_lo
    if steps > 1:
        ts[-1], lams[-1] = levels.t_min, levels.lambda_max
    return ts, lams


class Denoiser:
    """x0(x_t, t): the model's data prediction at a (fractional) timestep, from its eps, x0 or v
    output (the first C channels when it also outputs variances): x0 = (x - sigma eps) / alpha,
    or x0 = alpha x - sigma v (v = alpha eps - sigma x0)."""

    def __init__(self, model, diffusion, levels, clip_denoised=True, model_kwargs=None):
        if diffusion.model_mean_type not in (ModelMeanType.EPSILON, ModelMeanType.START_X, ModelMeanType.V):
            raise ValueError(f"{diffusion.model_mean_type}: the ODE samplers need an eps, x0 or v predicting model")
        self.model = model
        self.mean_type = diffusion.model_mean_type
        self.learned_sigma = diffusion.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE)
        self.levels = levels
        self.clip_denoised = clip_denoised
        self.model_kwargs = model_kwargs or {}
        self.calls = 0

    def __call__(self, x, t, lam):
        alpha, sigma = self.levels.alpha_sigma(lam)
        # float64 inputs keep float64 timesteps (the oracle tests); a network gets float32.
        t_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        t_in = torch.full((x.shape[0],), self.levels.model_input(float(t)), dtype=t_dtype, device=x.device)
        out = self.model(x, t_in, **self.model_kwargs)
        self.calls += 1
        C = x.shape[1]
        if self.learned_sigma:
            if out.shape[1] != 2 * C:
                raise ValueError(f"model output {tuple(out.shape)}: expected {2 * C} channels (learned sigma)")
            out = out[:, :C]
        out = out.to(x.dtype)  # autocast may hand back half precision
        if self.mean_type == ModelMeanType.START_X:
            x0 = out
        elif self.mean_type == ModelMeanType.V:
            x0 = alpha * x - sigma * out
        else:
            x0 = (x - sigma * out) / alpha
        return x0.clamp(-1, 1) if self.clip_denoised else x0


def _dpm_solver_pp(denoise, x, ts, lams, second_order):
    """ddim (second_order False) and DPM-Solver++(2M) from x_T at ts[0] to the clean data."""
    prev_x0 = prev_h = None
    for i, (t, lam) in enumerate(zip(ts, lams)):
        x0 = denoise(x, t, lam)
        if i == len(ts) - 1:
            return x0  # onto sigma = 0: e^{-h} = 0, sigma_next = 0, alpha_next = 1
        lam_next = lams[i + 1]
        h = lam_next - lam
        d = multistep_x0(x0, prev_x0, h, prev_h) if second_order else x0
        (_, sigma), (alpha_next, sigma_next) = NoiseLevels.alpha_sigma(lam), NoiseLevels.alpha_sigma(lam_next)
        x = (sigma_next / sigma) * x - (alpha_next * math.expm1(-h)) * d
        prev_x0, prev_h = x0, h
    raise AssertionError("unreachable")


def multistep_x0(x0, prev_x0, h, prev_h):
    """DPM-Solver++(2M)'s data estimate D_i = x0_i + (x0_i - x0_{i-1}) / (2 r_i), r_i = h_{i-1} / h_i
    (x0_i itself at the first step, where there is no x0_{i-1})."""
    if prev_x0 is None:
        return x0
    half_inv_r = 0.5 * h / prev_h
    return (1 + half_inv_r) * x0 - half_inv_r * prev_x0


def sde_step(x, d, lam, lam_next, z):
    """One SDE-DPM-Solver++ step (eta = 1) from half log-SNR lam to the less noisy lam_next with
    data estimate d and standard normal z:
    x' = (sigma' / sigma) e^{-h} x + alpha' (1 - e^{-2h}) d + sigma' sqrt(1 - e^{-2h}) z.
    With d the true x0 this is a draw of q(x' | x, x0): mean and variance are the DDPM posterior's."""
    h = lam_next - lam
    (_, sigma), (alpha_next, sigma_next) = NoiseLevels.alpha_sigma(lam), NoiseLevels.alpha_sigma(lam_next)
    one_minus = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
    return (((sigma_next / sigma) * math.exp(-h)) * x + (alpha_next * one_minus) * d
            + (sigma_next * math.sqrt(one_minus)) * z)


def _sde_dpm_solver_pp(denoise, x, ts, lams, noise_fn):
    """SDE-DPM-Solver++(2M) from x_T at ts[0] to the clean data; `noise_fn(x)` draws each step's z."""
    prev_x0 = prev_h = None
    for i, (t, lam) in enumerate(zip(ts, lams)):
        x0 = denoise(x, t, lam)
        if i == len(ts) - 1:
            return x0  # onto sigma = 0: alpha' = 1, sigma' = 0, e^{-h} = 0
        h = lams[i + 1] - lam
        x = sde_step(x, multistep_x0(x0, prev_x0, h, prev_h), lam, lams[i + 1], noise_fn(x))
        prev_x0, prev_h = x0, h
    raise AssertionError("unreachable")


def _heun(denoise, levels, x, ts, lams):
    """EDM Algorithm 1 (S_churn = 0) in x_sigma = x_t / alpha_t, sigma = e^{-lambda}."""
    alpha0, _ = levels.alpha_sigma(lams[0])
    x_hat = x / alpha0
    sigmas = [math.exp(-lam) for lam in lams]

    def D(x_sig, i):  # the model sees the VP input alpha x_sigma
        alpha, _ = levels.alpha_sigma(lams[i])
        return denoise(alpha * x_sig, ts[i], lams[i])

    for i, sigma in enumerate(sigmas):
        denoised = D(x_hat, i)
        if i == len(sigmas) - 1:
            return denoised  # Euler onto sigma = 0: x + (0 - sigma) (x - D) / sigma = D
        sigma_next = sigmas[i + 1]
        d = (x_hat - denoised) / sigma
        x_euler = x_hat + (sigma_next - sigma) * d
        d_next = (x_euler - D(x_euler, i + 1)) / sigma_next
        x_hat = x_hat + (sigma_next - sigma) * (0.5 * d + 0.5 * d_next)
    raise AssertionError("unreachable")


def sample_loop(model, diffusion, noise, *, sampler, steps=None, time_schedule="uniform", clip_denoised=True,
                model_kwargs=None, noise_fn=None, t_start=None):
    """Samples from x_T = `noise` (N, C, ...) with one of SAMPLERS.

    ddim, dpmpp_2m, dpmpp_2m_sde and heun take `steps` steps over `diffusion`'s timesteps placed
    by `time_schedule` and call `model(x, t, **model_kwargs)` directly, with fractional t scaled
    as the diffusion would (do not pass a respacing _WrappedModel). With `t_start` (a timestep,
    fractional allowed) `noise` is x at t_start instead of x_T, and the steps cover t_start..0
    (`time_points`): the partial decode of SDEdit. ddpm runs diffusion.p_sample_loop over the
    diffusion's own timesteps (`steps` None or their number). ddpm and dpmpp_2m_sde draw each
    step's noise with `noise_fn(like) -> standard normal tensor of like's shape` (torch.randn
    when None), which is how per-sample generators keep a sample independent of its batch.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: one of {', '.join(SAMPLERS)}")
    if sampler == "ddpm":
        if steps not in (None, diffusion.num_timesteps):
            raise ValueError(f"ddpm runs the diffusion's {diffusion.num_timesteps} timesteps (respace it for fewer)")
        if time_schedule != "uniform":
            raise ValueError("ddpm takes the diffusion's timesteps: no time schedule")
        if t_start is not None:
            raise ValueError("ddpm starts at x_T: t_start is for the samplers of STEP_SAMPLERS")
        return diffusion.p_sample_loop(model, tuple(noise.shape), noise=noise, clip_denoised=clip_denoised,
                                       model_kwargs=model_kwargs, device=noise.device, noise_fn=noise_fn)
    if steps is None:
        raise ValueError(f"{sampler} needs a number of steps")
    levels = NoiseLevels(diffusion)
    ts, lams = time_points(levels, steps, time_schedule, t_start=t_start)
    denoise = Denoiser(model, diffusion, levels, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
    with torch.no_grad():
        if sampler == "heun":
            return _heun(denoise, levels, noise, ts, lams)
        if sampler == "dpmpp_2m_sde":
            return _sde_dpm_solver_pp(denoise, noise, ts, lams, noise_fn or torch.randn_like)
        return _dpm_solver_pp(denoise, noise, ts, lams, second_order=sampler == "dpmpp_2m")


def invert(model, diffusion, x0, steps, time_schedule="uniform", model_kwargs=None, clip_denoised=True):
    """DDIM inversion: the eta = 0 DDIM ODE run backwards, from the data `x0` (N, C, ...) to x_T.

    It visits the time points of `sample_loop(sampler="ddim", steps=steps, time_schedule=...)`
    in reverse, so that decoding its answer with that call returns x0 up to the discretisation
    error, which falls as `steps` grows (first order). Each step is DDIM's update from the less
    noisy point u to the noisier s with the model evaluated at u:
    x_s = alpha_s x0(x_u, u) + sigma_s eps(x_u, u), eps = (x_u - alpha_u x0(x_u, u)) / sigma_u.
    The first step, from the data (sigma = 0) onto t = 0, takes eps at alpha_0 x0 (the data at
    t = 0's scale without noise) where the decode's last step would need it at the unknown
    alpha_0 x0 + sigma_0 eps: sigma_0 is small, so the error this leaves (which does not shrink
    with `steps`) is far below the discretisation error. `steps` model evaluations, as the decode.
    """
    levels = NoiseLevels(diffusion)
    ts, lams = time_points(levels, steps, time_schedule)
    denoise = Denoiser(model, diffusion, levels, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
    with torch.no_grad():
        alpha, sigma = levels.alpha_sigma(lams[-1])
        start = alpha * x0
        eps = (start - alpha * denoise(start, ts[-1], lams[-1])) / sigma
        x = start + sigma * eps
        for i in range(len(ts) - 1, 0, -1):
            d = denoise(x, ts[i], lams[i])
            h = lams[i - 1] - lams[i]  # negative: towards the noise
            (_, sigma), (alpha_next, sigma_next) = levels.alpha_sigma(lams[i]), levels.alpha_sigma(lams[i - 1])
            x = (sigma_next / sigma) * x - (alpha_next * math.expm1(-h)) * d  # DDIM's update, reversed roles
    return x


def sdedit_start(diffusion, t0: float) -> float:
    """The timestep at fraction t0 in (0, 1] of the process: t_min + t0 (t_max - t_min)."""
    if not 0 < t0 <= 1:
        raise ValueError(f"t0 {t0} must be in (0, 1]")
    levels = NoiseLevels(diffusion)
    return levels.t_min + t0 * (levels.t_max - levels.t_min)


def sdedit_steps(steps: int, t0: float) -> int:
    """Steps of a partial decode from fraction t0: the share t0 of `steps`, at least 1."""
    return max(1, math.ceil(t0 * steps - 1e-9))


def sdedit(model, diffusion, x0, eps, t0, *, sampler="ddim", steps=50, time_schedule="uniform", clip_denoised=True,
           model_kwargs=None):
    """SDEdit (Meng et al. 2022) with a deterministic sampler: noise the data `x0` to the
    timestep at fraction t0 of the process, x = alpha x0 + sigma eps (the caller's `eps`), then
    decode from there to t = 0 with `sampler` over `sdedit_steps(steps, t0)` points placed by
    `time_schedule` below that timestep. t0 = 1 is the ordinary sampler from x_T = alpha_T x0 +
    sigma_T eps, all but independent of x0 (alpha_T is about 0); a small t0 returns about x0."""
    if sampler not in ODE_SAMPLERS:
        raise ValueError(f"sdedit decodes with one of {', '.join(ODE_SAMPLERS)}, not {sampler!r}")
    t_start = sdedit_start(diffusion, t0)
    levels = NoiseLevels(diffusion)
    alpha, sigma = levels.alpha_sigma(float(levels.lam(t_start)))
    x = alpha * x0 + sigma * eps
    return sample_loop(model, diffusion, x, sampler=sampler, steps=sdedit_steps(steps, t0),
                       time_schedule=time_schedule, clip_denoised=clip_denoised, model_kwargs=model_kwargs,
                       t_start=t_start)
