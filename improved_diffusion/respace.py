"""Sampling with fewer steps than training: keep a subset of the base process's timesteps."""

import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps, section_counts):
    """The set of base timesteps to keep.

    `section_counts` is a list of ints or a comma string such as "10,15,20": the process is
    cut into that many equal sections (the first `num_timesteps % len` sections one step
    longer) and each is strided evenly to its count, both ends included. "ddimN" instead
    takes the integer stride of the DDIM paper, range(0, T, stride), with exactly N steps.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {desired} steps from {num_timesteps} with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        # Python's round (half to even) decides ties, as in the released code.
        steps += [start + round(k * stride) for k in range(count)]
        start += size
    return set(steps)


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion that visits only `use_timesteps` of a base process.

    Betas are recomputed so that the kept steps have the base process's alpha_bar; the
    model still sees the base process's timestep numbers (see _WrappedModel).
    """

    def __init__(self, use_timesteps, **kwargs):
        self.use_timesteps = set(use_timesteps)
        self.original_num_steps = len(kwargs["betas"])
        base = GaussianDiffusion(**kwargs)
        self.timestep_map = []
        new_betas, last = [], 1.0
        for i, alpha_cumprod in enumerate(base.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last)
                last = alpha_cumprod
                self.timestep_map.append(i)
        kwargs["betas"] = np.array(new_betas)
        super().__init__(**kwargs)

    def p_mean_variance(self, model, *args, **kwargs):
        return super().p_mean_variance(self._wrap_model(model), *args, **kwargs)

    def training_losses(self, model, *args, **kwargs):
        return super().training_losses(self._wrap_model(model), *args, **kwargs)

    def _wrap_model(self, model):
        if isinstance(model, _WrappedModel):
            return model
        # One timestep map per device, shared by every wrapper: building it in each call copied
        # a list to the device (a synchronising copy on CUDA) in every training and sampling
        # step. The wrapper itself is a plain object, cheap to make per call (caching it per
        # model would keep every wrapped model alive: the wrapper holds the model).
        maps = self.__dict__.setdefault("_timestep_maps", {})
        return _WrappedModel(model, self.timestep_map, self.rescale_timesteps, self.original_num_steps, maps)

    def _scale_timesteps(self, t):
        return t  # the wrapped model maps and rescales


class _WrappedModel:
    """Calls the model with base-process timestep numbers (rescaled to 0..1000 if asked)."""

    def __init__(self, model, timestep_map, rescale_timesteps, original_num_steps, maps=None):
        self.model = model
        self.timestep_map = timestep_map
        self.rescale_timesteps = rescale_timesteps
        self.original_num_steps = original_num_steps
        self._maps = {} if maps is None else maps  # device -> the map as a tensor there

    def __call__(self, x, ts, **kwargs):
        table = self._maps.get(ts.device)
        if table is None:
            table = torch.tensor(self.timestep_map, dtype=torch.long).to(ts.device)
            self._maps[ts.device] = table
        new_ts = table[ts.long()]
        if self.rescale_timesteps:
            new_ts = new_ts.float() * (1000.0 / self.original_num_steps)
        return self.model(x, new_ts, **kwargs)
