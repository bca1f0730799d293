"""Gaussian diffusion (Ho et al. 2020) with the improvements of Nichol & Dhariwal (2021):
cosine schedule, learned-range variances, hybrid loss, DDIM sampling and the full bound.

Tables are float64 numpy arrays (float32 loses the small betas of long schedules); values
are gathered per timestep and cast to float32 when they meet tensors. Public names and
semantics are openai/improved-diffusion's. Every random draw of the samplers can be routed
through `noise_fn(like_tensor) -> tensor`, which is how per-sample generators make output
independent of batch size and rank count.
"""

import collections
import enum
import math

import numpy as np
import torch

from .losses import discretized_gaussian_log_likelihood, normal_kl
from .nn import mean_flat


def get_named_beta_schedule(schedule_name, num_diffusion_timesteps):
    """Betas of a named schedule; both keep the same shape when T changes."""
    if schedule_name == "linear":
        # Ho et al.'s 1e-4..0.02 for T=1000, scaled so that other T give a similar process.
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if schedule_name == "cosine":
        return betas_for_alpha_bar(
            num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        )
    raise NotImplementedError(f"--noise_schedule {schedule_name}: unknown beta schedule (choose linear or cosine)")


def betas_for_alpha_bar(num_diffusion_timesteps, alpha_bar, max_beta=0.999):
    """Discretise a continuous alpha_bar(t), t in [0, 1], into betas capped at max_beta
    (the cap avoids a singular last step where alpha_bar reaches 0)."""
    T = num_diffusion_timesteps
    return np.array(
        [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)], dtype=np.float64
    )


class ModelMeanType(enum.Enum):
    """What the model's first C output channels predict."""

    PREVIOUS_X = enum.auto()  # x_{t-1}
    START_X = enum.auto()  # x_0
    EPSILON = enum.auto()  # the noise
    V = enum.auto()  # v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022; ours, not openai's)


class ModelVarType(enum.Enum):
    """Where the reverse-process variance comes from."""

    LEARNED = enum.auto()  # the model outputs log variance
    FIXED_SMALL = enum.auto()  # posterior variance beta~_t
    FIXED_LARGE = enum.auto()  # beta_t
    LEARNED_RANGE = enum.auto()  # the model interpolates log beta~_t .. log beta_t


class LossType(enum.Enum):
    MSE = enum.auto()  # MSE (plus the VB term when variances are learned)
    RESCALED_MSE = enum.auto()  # MSE plus the VB term scaled by T/1000
    KL = enum.auto()  # the variational bound
    RESCALED_KL = enum.auto()  # the bound times T: an estimate of the full bound

    def is_vb(self):
        return self in (LossType.KL, LossType.RESCALED_KL)


# Schedule tables on the device, keyed by their content: a numpy table copied to a CUDA device
# is a synchronous host-to-device copy, and every training step indexes about 15 of them.
# Content, not identity, because callers also pass tables computed on the fly (1 - alphas_cumprod,
# np.log(betas)); the bytes of a 4000-step table are 32 KB, hashed in microseconds. Bounded: a
# process that builds many diffusions drops the oldest tables.
_DEVICE_TABLES = collections.OrderedDict()
_DEVICE_TABLES_MAX = 256


def _device_table(arr, device):
    """`arr` (numpy) as a tensor of its own dtype on `device`, copied there once."""
    arr = np.ascontiguousarray(arr)
    key = (arr.dtype.str, arr.shape, arr.tobytes(), str(device))
    table = _DEVICE_TABLES.get(key)
    if table is None:
        table = torch.from_numpy(arr.copy()).to(device=device)
        _DEVICE_TABLES[key] = table
        if len(_DEVICE_TABLES) > _DEVICE_TABLES_MAX:
            _DEVICE_TABLES.popitem(last=False)
    else:
        _DEVICE_TABLES.move_to_end(key)
    return table


def _extract_into_tensor(arr, timesteps, broadcast_shape):
    """arr[timesteps] as float32 on timesteps' device, broadcast to broadcast_shape."""
    res = _device_table(arr, timesteps.device)[timesteps].float()
    return res.reshape(*res.shape, *([1] * (len(broadcast_shape) - res.ndim))).expand(broadcast_shape)


def _randn_like(x):
    return torch.randn_like(x)


class GaussianDiffusion:
    """Training losses, samplers and the likelihood bound of one diffusion process.

    :param betas: 1-D array of betas, t = 0 .. T-1.
    :param rescale_timesteps: feed the model t * 1000 / T so that models see the scale of
        the original 1000-step paper whatever T is.
    """

    def __init__(self, *, betas, model_mean_type, model_var_type, loss_type, rescale_timesteps=False,
                 snr_gamma=0.0):
        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.rescale_timesteps = rescale_timesteps
        if snr_gamma < 0:
            raise ValueError(f"--snr_gamma {snr_gamma}: must be >= 0 (0: uniform weighting)")
        if snr_gamma and loss_type.is_vb():
            raise ValueError("--snr_gamma weights the MSE term, and --use_kl True trains on the bound alone")
        if snr_gamma and model_mean_type == ModelMeanType.PREVIOUS_X:
            raise ValueError("--snr_gamma: min-SNR weights exist for eps, x_0 and v prediction only")
        self.snr_gamma = float(snr_gamma)

        betas = np.array(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array with values in (0, 1]")
        self.betas = betas
        self.num_timesteps = int(betas.shape[0])

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)

        # q(x_t | x_0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)

        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta~_t)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 is 0: its log is replaced by beta~_1's so that the table stays finite.
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

        # SNR_t = abar_t / (1 - abar_t) of this chain: for a SpacedDiffusion the respaced one,
        # whose abar at its step i is the base process's at timestep_map[i].
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    def mse_weights(self):
        """Per-timestep weights of the MSE term: min-SNR-gamma (Hang et al. 2023) expressed for
        what the model predicts, so that each gives the same weight to the x_0 error:
        min(SNR, g) / SNR for eps, min(SNR, g) / (SNR + 1) for v, min(SNR, g) for x_0; None
        (uniform, openai's) when snr_gamma is 0."""
        if not self.snr_gamma:
            return None
        clipped = np.minimum(self.snr, self.snr_gamma)
        if self.model_mean_type == ModelMeanType.EPSILON:
            return clipped / self.snr
        if self.model_mean_type == ModelMeanType.V:
            return clipped / (self.snr + 1.0)
        return clipped

    # ----- forward process -------------------------------------------------------------

    def q_mean_variance(self, x_start, t):
        """Mean, variance and log variance of q(x_t | x_0)."""
        mean = _extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
        variance = _extract_into_tensor(1.0 - self.alphas_cumprod, t, x_start.shape)
        log_variance = _extract_into_tensor(self.log_one_minus_alphas_cumprod, t, x_start.shape)
        return mean, variance, log_variance

    def q_sample(self, x_start, t, noise=None):
        """Draw x_t ~ q(x_t | x_0); t = 0 means one step of noise."""
        if noise is None:
            noise = torch.randn_like(x_start)
        if noise.shape != x_start.shape:
            raise ValueError("noise and x_start shapes differ")
        return (
            _extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
            + _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        )

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        if x_start.shape != x_t.shape:
            raise ValueError("x_start and x_t shapes differ")
        mean = (
            _extract_into_tensor(self.posterior_mean_coef1, t, x_t.shape) * x_start
            + _extract_into_tensor(self.posterior_mean_coef2, t, x_t.shape) * x_t
        )
        variance = _extract_into_tensor(self.posterior_variance, t, x_t.shape)
        log_variance = _extract_into_tensor(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance

    # ----- reverse process -------------------------------------------------------------

    def _scale_timesteps(self, t):
        return t.float() * (1000.0 / self.num_timesteps) if self.rescale_timesteps else t

    def _model_variance(self, model_var_values, t, shape):
        """(variance, log variance) of p(x_{t-1} | x_t) for this diffusion's ModelVarType."""
        if self.model_var_type == ModelVarType.LEARNED:
            return torch.exp(model_var_values), model_var_values
        if self.model_var_type == ModelVarType.LEARNED_RANGE:
            min_log = _extract_into_tensor(self.posterior_log_variance_clipped, t, shape)
            max_log = _extract_into_tensor(np.log(self.betas), t, shape)
            frac = (model_var_values + 1) / 2  # model output in [-1, 1] -> [min, max]
            log_variance = frac * max_log + (1 - frac) * min_log
            return torch.exp(log_variance), log_variance
        if self.model_var_type == ModelVarType.FIXED_LARGE:
            # beta~_1 at t = 0 (instead of beta_0) gives a better decoder likelihood.
            variance = np.append(self.posterior_variance[1], self.betas[1:])
            log_variance = np.log(variance)
        elif self.model_var_type == ModelVarType.FIXED_SMALL:
            variance, log_variance = self.posterior_variance, self.posterior_log_variance_clipped
        else:
            raise NotImplementedError(self.model_var_type)
        return _extract_into_tensor(variance, t, shape), _extract_into_tensor(log_variance, t, shape)

    def p_mean_variance(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None):
        """Apply the model: mean, variance, log_variance of p(x_{t-1} | x_t) and pred_xstart."""
        model_kwargs = model_kwargs or {}
        B, C = x.shape[:2]
        if t.shape != (B,):
            raise ValueError(f"t has shape {tuple(t.shape)}, expected ({B},)")
        model_output = model(x, self._scale_timesteps(t), **model_kwargs)
        return self._p_mean_variance_from_output(model_output, x, t, clip_denoised, denoised_fn)

    def _p_mean_variance_from_output(self, model_output, x, t, clip_denoised=True, denoised_fn=None):
        C = x.shape[1]
        model_output = model_output.float()  # autocast may hand back half precision
        if self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE):
            if model_output.shape != (x.shape[0], 2 * C, *x.shape[2:]):
                raise ValueError(f"model output {tuple(model_output.shape)}: expected {2 * C} channels (learned sigma)")
            model_output, var_values = torch.split(model_output, C, dim=1)
        else:
            var_values = None
        variance, log_variance = self._model_variance(var_values, t, x.shape)

        def process_xstart(x0):
            if denoised_fn is not None:
                x0 = denoised_fn(x0)
            return x0.clamp(-1, 1) if clip_denoised else x0

        if self.model_mean_type == ModelMeanType.PREVIOUS_X:
            pred_xstart = process_xstart(self._predict_xstart_from_xprev(x_t=x, t=t, xprev=model_output))
            mean = model_output
        elif self.model_mean_type == ModelMeanType.START_X:
            pred_xstart = process_xstart(model_output)
            mean, _, _ = self.q_posterior_mean_variance(x_start=pred_xstart, x_t=x, t=t)
        elif self.model_mean_type == ModelMeanType.EPSILON:
            pred_xstart = process_xstart(self._predict_xstart_from_eps(x_t=x, t=t, eps=model_output))
            mean, _, _ = self.q_posterior_mean_variance(x_start=pred_xstart, x_t=x, t=t)
        elif self.model_mean_type == ModelMeanType.V:
            pred_xstart = process_xstart(self._predict_xstart_from_v(x_t=x, t=t, v=model_output))
            mean, _, _ = self.q_posterior_mean_variance(x_start=pred_xstart, x_t=x, t=t)
        else:
            raise NotImplementedError(self.model_mean_type)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def _predict_xstart_from_eps(self, x_t, t, eps):
        return (
            _extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
            - _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps
        )

    def _predict_v(self, x_start, t, noise):
        """The v-prediction target v = alpha_t eps - sigma_t x_0, alpha_t = sqrt(abar_t),
        sigma_t = sqrt(1 - abar_t)."""
        return (_extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * noise
                - _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * x_start)

    def _predict_xstart_from_v(self, x_t, t, v):
        """x_0 = alpha_t x_t - sigma_t v."""
        return (_extract_into_tensor(self.sqrt_alphas_cumprod, t, x_t.shape) * x_t
                - _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * v)

    def _predict_eps_from_v(self, x_t, t, v):
        """eps = sigma_t x_t + alpha_t v."""
        return (_extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * x_t
                + _extract_into_tensor(self.sqrt_alphas_cumprod, t, x_t.shape) * v)

    def _predict_xstart_from_xprev(self, x_t, t, xprev):
        # Invert the posterior mean: x_0 = (x_{t-1} - coef2 x_t) / coef1.
        return (
            _extract_into_tensor(1.0 / self.posterior_mean_coef1, t, x_t.shape) * xprev
            - _extract_into_tensor(self.posterior_mean_coef2 / self.posterior_mean_coef1, t, x_t.shape) * x_t
        )

    def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return (
            _extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart
        ) / _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape)

    # ----- ancestral sampling ----------------------------------------------------------

    def p_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, noise_fn=None):
        """One step x_t -> x_{t-1}; no noise is added at t = 0."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                   model_kwargs=model_kwargs)
        noise = (noise_fn or _randn_like)(x)
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def p_sample_loop(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, model_kwargs=None,
                      device=None, progress=False, noise_fn=None):
        """Samples of the given shape, from x_T to x_0."""
        final = None
        for final in self.p_sample_loop_progressive(model, shape, noise=noise, clip_denoised=clip_denoised,
                                                    denoised_fn=denoised_fn, model_kwargs=model_kwargs,
                                                    device=device, progress=progress, noise_fn=noise_fn):
            pass
        return final["sample"]

    def _start(self, model, shape, noise, device, progress, noise_fn):
        if device is None:
            device = next(model.parameters()).device
        if noise is not None:
            img = noise
        elif noise_fn is not None:
            img = noise_fn(torch.empty(*shape, device=device))
        else:
            img = torch.randn(*shape, device=device)
        indices = list(range(self.num_timesteps))[::-1]
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices)
        return img, indices, device

    def p_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None,
                                  model_kwargs=None, device=None, progress=False, noise_fn=None):
        """Yield p_sample's dict at every step from T-1 down to 0."""
        img, indices, device = self._start(model, shape, noise, device, progress, noise_fn)
        for i in indices:
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            with torch.no_grad():
                out = self.p_sample(model, img, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                    model_kwargs=model_kwargs, noise_fn=noise_fn)
            yield out
            img = out["sample"]

    # ----- DDIM ------------------------------------------------------------------------

    def ddim_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, eta=0.0,
                    noise_fn=None):
        """One DDIM step (Song et al. 2021, eq. 12); eta = 0 is deterministic, 1 is DDPM-like."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                   model_kwargs=model_kwargs)
        # Re-derive eps from x_0 so that x_0- and x_{t-1}-predicting models work too.
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = _extract_into_tensor(self.alphas_cumprod, t, x.shape)
        alpha_bar_prev = _extract_into_tensor(self.alphas_cumprod_prev, t, x.shape)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        # Drawn even when eta = 0 so that every sampler consumes the generators alike.
        noise = (noise_fn or _randn_like)(x)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        return {"sample": mean_pred + nonzero * sigma * noise, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, eta=0.0):
        """x_t -> x_{t+1} along the deterministic DDIM ODE."""
        if eta != 0.0:
            raise ValueError("the reverse ODE is deterministic: eta must be 0")
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                   model_kwargs=model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar_next = _extract_into_tensor(self.alphas_cumprod_next, t, x.shape)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_next) + torch.sqrt(1 - alpha_bar_next) * eps
        return {"sample": mean_pred, "pred_xstart": out["pred_xstart"]}

    def ddim_sample_loop(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, model_kwargs=None,
                         device=None, progress=False, eta=0.0, noise_fn=None):
        final = None
        for final in self.ddim_sample_loop_progressive(model, shape, noise=noise, clip_denoised=clip_denoised,
                                                       denoised_fn=denoised_fn, model_kwargs=model_kwargs,
                                                       device=device, progress=progress, eta=eta,
                                                       noise_fn=noise_fn):
            pass
        return final["sample"]

    def ddim_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None,
                                     model_kwargs=None, device=None, progress=False, eta=0.0, noise_fn=None):
        img, indices, device = self._start(model, shape, noise, device, progress, noise_fn)
        for i in indices:
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            with torch.no_grad():
                out = self.ddim_sample(model, img, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                       model_kwargs=model_kwargs, eta=eta, noise_fn=noise_fn)
            yield out
            img = out["sample"]

    # ----- the variational bound and the training losses -------------------------------

    def _vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=True, model_kwargs=None):
        """One term of the bound in bits per dimension: KL(q || p) for t > 0, the
        discretised decoder NLL at t = 0. Returns {"output": (N,), "pred_xstart"}."""
        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        return self._vb_terms_from_p(out, x_start, x_t, t)

    def _vb_terms_from_p(self, out, x_start, x_t, t):
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None):
        """Per-example losses at timesteps t: {"loss", and "mse"/"vb" where they apply}."""
        model_kwargs = model_kwargs or {}
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)
        terms = {}
        if self.loss_type.is_vb():
            terms["loss"] = self._vb_terms_bpd(model, x_start, x_t, t, clip_denoised=False,
                                               model_kwargs=model_kwargs)["output"]
            if self.loss_type == LossType.RESCALED_KL:
                terms["loss"] = terms["loss"] * self.num_timesteps
            return terms
        if self.loss_type not in (LossType.MSE, LossType.RESCALED_MSE):
            raise NotImplementedError(self.loss_type)

        model_output = model(x_t, self._scale_timesteps(t), **model_kwargs).float()
        C = x_t.shape[1]
        if self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE):
            model_output, var_values = torch.split(model_output, C, dim=1)
            # The bound trains the variance only: the mean is frozen (stop-gradient) so that
            # L_vb does not disturb what L_simple teaches the mean.
            frozen = torch.cat([model_output.detach(), var_values], dim=1)
            out = self._p_mean_variance_from_output(frozen, x_t, t, clip_denoised=False)
            terms["vb"] = self._vb_terms_from_p(out, x_start, x_t, t)["output"]
            if self.loss_type == LossType.RESCALED_MSE:
                # lambda = 1/1000 per term of the T-term bound, i.e. the T/1000 factor.
                terms["vb"] = terms["vb"] * (self.num_timesteps / 1000.0)

        if self.model_mean_type == ModelMeanType.PREVIOUS_X:
            target = self.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)[0]
        elif self.model_mean_type == ModelMeanType.START_X:
            target = x_start
        elif self.model_mean_type == ModelMeanType.V:
            target = self._predict_v(x_start, t, noise)
        else:
            target = noise
        terms["mse"] = mean_flat((target - model_output) ** 2)
        weights = self.mse_weights()
        if weights is not None:
            terms["mse"] = _extract_into_tensor(weights, t, terms["mse"].shape) * terms["mse"]
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms

    def _prior_bpd(self, x_start):
        """KL(q(x_T | x_0) || N(0, I)) in bits per dimension (no parameters to learn)."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, device=x_start.device, dtype=torch.long)
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        return mean_flat(normal_kl(mean, log_variance, 0.0, 0.0)) / math.log(2.0)

    def calc_bpd_loop(self, model, x_start, clip_denoised=True, model_kwargs=None, noise_fn=None):
        """The whole bound in bits/dim plus its per-timestep terms.

        Returns total_bpd (N,), prior_bpd (N,), and (N, T) tensors vb, xstart_mse, mse.
        """
        vb, xstart_mse, mse = [], [], []
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x_start.shape[0],), i, device=x_start.device, dtype=torch.long)
            noise = (noise_fn or _randn_like)(x_start)
            x_t = self.q_sample(x_start, t, noise=noise)
            with torch.no_grad():
                out = self._vb_terms_bpd(model, x_start, x_t, t, clip_denoised=clip_denoised,
                                         model_kwargs=model_kwargs)
            vb.append(out["output"])
            xstart_mse.append(mean_flat((out["pred_xstart"] - x_start) ** 2))
            eps = self._predict_eps_from_xstart(x_t, t, out["pred_xstart"])
            mse.append(mean_flat((eps - noise) ** 2))
        vb = torch.stack(vb, dim=1)
        prior_bpd = self._prior_bpd(x_start)
        return {
            "total_bpd": vb.sum(dim=1) + prior_bpd,
            "prior_bpd": prior_bpd,
            "vb": vb,
            "xstart_mse": torch.stack(xstart_mse, dim=1),
            "mse": torch.stack(mse, dim=1),
        }
