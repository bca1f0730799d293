"""Draw images for given sample indices from an improved-diffusion model: the one sampling
routine of improved_diffusion.sample and of the training probe (task.Task.probe_images), so that
the same seed, weights and sampler give the same images from both.

Each sample index owns a generator (trainkit.sampling.PerSampleRandom) that draws, in this
order, its label (class-conditional models without fixed labels), its x_T, and each step's noise
(the ancestral sampler, DDIM with eta > 0, dpmpp_2m_sde). On the CPU the model is called on fixed
blocks of rows (InBlocks), so a sample is also independent of the batch it is drawn in.
"""

import contextlib

import numpy as np
import torch

from trainkit import dist, npz

from . import samplers
from .guidance import guided

SAMPLE_BLOCK = 8  # rows per model call in batch-invariant sampling


class InBlocks:
    """Calls the model on fixed blocks of `block` rows, sample i always in row i % block of the
    call for block i // block (rows of absent samples are zeros).

    CPU convolution and GEMM kernels pick their blocking from the batch size, and may treat
    rows by their position, so a sample's output changes in the last bits with the batch it
    is in (measured: 1e-7, enough to flip uint8 pixels after a few hundred steps). No kernel
    here mixes the values of different rows, so with the call size and the row fixed by the
    sample index, a sample is computed the same way whatever --batch_size or the number of
    ranks (tests/contract/test_id_train.py). Used on the CPU; on GPUs the batch is kept as it is (and
    bitwise equality is not promised). Blocks of 8 keep most of batching's speed (2.5x batch
    1 on the digits model); block 1 is one sample per call.
    """

    def __init__(self, model, indices, block):
        self.model = model
        self.block = block
        self.groups = {}  # block number -> (rows of the batch, their rows in the call)
        for row, i in enumerate(indices):
            rows, slots = self.groups.setdefault(i // block, ([], []))
            rows.append(row)
            slots.append(i % block)

    def _padded(self, v, rows, slots):
        out = v.new_zeros((self.block, *v.shape[1:]))
        out[slots] = v[rows]
        return out

    def __call__(self, x, t, **kwargs):
        out = None
        for rows, slots in self.groups.values():
            y = self.model(self._padded(x, rows, slots), self._padded(t, rows, slots),
                           **{k: self._padded(v, rows, slots) for k, v in kwargs.items()})[slots]
            if out is None:
                out = y.new_empty((x.shape[0], *y.shape[1:]))
            out[rows] = y
        return out


def invariant_block(batch_invariant=True, device=None) -> int:
    """Rows per model call for batch-invariant sampling on the CPU; 0 (whole batches) elsewhere
    or when it is turned off."""
    device = dist.device() if device is None else torch.device(device)
    return SAMPLE_BLOCK if batch_invariant and device.type == "cpu" else 0


def draw(model, diffusion, rnd, shape, *, sampler, steps=None, time_schedule="uniform", eta=0.0,
         clip_denoised=True, guidance_scale=1.0, num_classes=None, labels=None, block=0, prec=None):
    """(uint8 N,H,W,C images, int64 labels or None) of the sample indices of `rnd` (a
    trainkit.sampling.PerSampleRandom), each of shape `shape` (C, H, W).

    steps None: openai's loops over `diffusion`'s own (possibly respaced) timesteps, the
    ancestral sampler for `sampler` ddpm, DDIM with `eta` for ddim. steps N: samplers.sample_loop's
    `sampler` over N points placed by `time_schedule` (`diffusion` then must not be respaced).
    num_classes: a class-conditional model; its labels are `labels` (a list, cycled by sample
    index) or drawn first from each sample's generator. guidance_scale != 1: classifier-free
    guidance (guidance.guided), wrapped inside InBlocks so each block doubles to cond + null rows.
    block > 0: the model is called on blocks of that many rows (InBlocks). prec: a
    trainkit.precision.Precision whose autocast the model runs under.
    """
    indices = rnd.indices
    net = guided(model, guidance_scale)
    if block:
        net = InBlocks(net, indices, block)
    kwargs, y = {}, None
    if num_classes:
        # drawn first from each sample's generator; chosen labels draw nothing
        y = (torch.tensor([labels[i % len(labels)] for i in indices], device=rnd.device) if labels
             else rnd.randint(num_classes))
        kwargs["y"] = y
    noise = rnd.randn(*shape)

    def step_noise(like):  # each sample's own generator, after its x_T
        return rnd.randn(*like.shape[1:])

    autocast = prec.autocast() if prec is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        if steps is not None:
            x = samplers.sample_loop(net, diffusion, noise, sampler=sampler, steps=steps, time_schedule=time_schedule,
                                     clip_denoised=clip_denoised, model_kwargs=kwargs, noise_fn=step_noise)
        elif sampler == "ddim":
            x = diffusion.ddim_sample_loop(net, (len(indices), *shape), noise=noise, clip_denoised=clip_denoised,
                                           model_kwargs=kwargs, device=rnd.device, noise_fn=step_noise, eta=eta)
        elif sampler == "ddpm":
            x = diffusion.p_sample_loop(net, (len(indices), *shape), noise=noise, clip_denoised=clip_denoised,
                                        model_kwargs=kwargs, device=rnd.device, noise_fn=step_noise)
        else:
            raise ValueError(f"{sampler} places its own steps: give steps")
    return npz.to_uint8(x.float()), (None if y is None else y.cpu().numpy().astype(np.int64))
