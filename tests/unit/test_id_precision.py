"""improved_diffusion's training step (DiffusionTask) under --precision fp16 / bf16 and --microbatch, in process on
a tiny UNet: fp16 keeps fp32 master weights, skips an overflowing step and lowers the scale,
and checkpoints the scale; bf16 trains; microbatch gradients equal the full batch's and DDP
synchronises only on the last microbatch."""

import contextlib

import torch

from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults
from improved_diffusion.train_util import DiffusionTask

TINY = dict(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="4",
            learn_sigma=True, diffusion_steps=10, noise_schedule="cosine", dropout=0.0)


def batches(n, batch_size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1  # one image, so the loss can fall
    for _ in range(n):
        yield base.repeat(batch_size, 1, 1, 1) + 0.01 * torch.randn(batch_size, 3, 8, 8, generator=g), None


def loop(tmp_path, precision="fp32", microbatch=-1, lr=1e-3, seed=0):
    """The family's task, with a batch source and a step counter as trainkit.loop would drive it."""
    torch.manual_seed(seed)
    kw = model_and_diffusion_defaults()
    kw.update(TINY)
    model, diffusion = create_model_and_diffusion(**kw)
    t = DiffusionTask(model=model, diffusion=diffusion, microbatch=microbatch, lr=lr, ema_rate="0.9",
                      precision_mode=precision, log=lambda *a: None)
    t.data = batches(10**6)
    t.done = 0

    def run_step(x, y):
        stats = t.step((x, y), t.done, 0)
        t.done += 1
        return stats

    t.run_step = run_step
    return t


def loss_of(stats):
    return float(stats["loss"][0] / stats["loss"][1])


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fp16_starts_at_openais_loss_scale_and_grows_at_its_rate(tmp_path):
    """openai's initial lg_loss_scale is 20, raised by fp16_scale_growth per good step: the scale
    doubles every round(1 / growth) good steps. (The skip of an overflowing step, the fp32 master
    weights and the checkpointed scale: tests/contract/test_task_contract.py, for every family.)"""
    t = loop(tmp_path, "fp16")
    assert t.precision.scale == 2.0**20
    assert t.precision.scaler.get_growth_interval() == 1000


def test_bf16_trains_with_fp32_weights_and_the_loss_falls(tmp_path):
    t = loop(tmp_path, "bf16", lr=2e-3)
    losses = []
    for _ in range(12):
        x, y = next(t.data)
        losses.append(loss_of(t.forward_backward(x, y)))
        t.precision.step(t.opt)
        t.opt.zero_grad(set_to_none=True)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert sum(losses[-3:]) < sum(losses[:3])


def test_microbatch_gradients_equal_the_full_batch(tmp_path):
    grads = {}
    for micro in (-1, 2, 3):  # 3 does not divide 8: the last microbatch is smaller
        t = loop(tmp_path / str(micro), microbatch=micro, seed=1)
        # the same timesteps and noise for every split: fix the sampler's draws and the noise
        t_all, w_all = torch.tensor([0, 9, 3, 5, 1, 7, 2, 8]), torch.ones(8)
        noise = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(5))
        offset = {"i": 0}

        def sample(n, device, t_all=t_all, w_all=w_all, offset=offset):
            i = offset["i"]
            offset["i"] += n
            return t_all[i:i + n], w_all[i:i + n]

        real = t.diffusion.training_losses

        def with_noise(model, x, steps, model_kwargs=None, real=real, offset=offset):
            i = offset["i"] - x.shape[0]
            return real(model, x, steps, model_kwargs=model_kwargs, noise=noise[i:i + x.shape[0]])

        t.schedule_sampler.sample = sample
        t.diffusion.training_losses = with_noise
        x, y = next(batches(1, seed=3))
        t.forward_backward(x, y)
        grads[micro] = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
    for micro in (2, 3):
        for n, g in grads[-1].items():
            torch.testing.assert_close(grads[micro][n], g, rtol=1e-4, atol=1e-6,
                                       msg=lambda m, n=n, micro=micro: f"{n} with --microbatch {micro}: {m}")


def test_ddp_synchronises_only_on_the_last_microbatch(tmp_path):
    t = loop(tmp_path, microbatch=3)
    calls = []

    class FakeDDP(torch.nn.Module):
        """Records whether each forward runs inside no_sync(), as DDP would skip the all-reduce."""

        def __init__(self, module):
            super().__init__()
            self.module = module
            self.inside = False

        @contextlib.contextmanager
        def no_sync(self):
            self.inside = True
            yield
            self.inside = False

        def forward(self, *args, **kwargs):
            calls.append(self.inside)
            return self.module(*args, **kwargs)

    t.ddp_model = FakeDDP(t.model)
    x, y = next(t.data)
    t.forward_backward(x, y)
    assert calls == [True, True, False]  # microbatches of 3, 3, 2: only the last one syncs


