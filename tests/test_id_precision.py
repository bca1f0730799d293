"""improved_diffusion's training step (DiffusionTask) under --precision fp16 / bf16 and --microbatch, in process on
a tiny UNet: fp16 keeps fp32 master weights, skips an overflowing step and lowers the scale,
and checkpoints the scale; bf16 trains; microbatch gradients equal the full batch's and DDP
synchronises only on the last microbatch."""

import contextlib

import pytest
import torch

from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults
from improved_diffusion.train_util import DiffusionTask
from trainkit import checkpoint

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


def test_fp16_keeps_fp32_master_weights_and_skips_an_overflowing_step(tmp_path):
    t = loop(tmp_path, "fp16")
    assert t.precision.scale == 2.0**20  # openai's initial lg_loss_scale of 20
    for _ in range(4):  # the first steps may overflow at 2^20 and lower the scale, as openai's do
        x, y = next(t.data)
        t.run_step(x, y)
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # master weights stay fp32
    assert 0 in t.opt.state_dict()["state"], "no step was taken"
    scale = t.precision.scale
    before, opt_before = params(t.model), {k: v.clone() for k, v in t.opt.state_dict()["state"][0].items()}
    ema_before = t.ema.state_dict(0.9, t.model)

    # a loss that overflows in fp16: the scaled gradients become inf
    real = t.diffusion.training_losses

    def exploding(*args, **kwargs):
        out = real(*args, **kwargs)
        out["loss"] = out["loss"] * 1e30
        return out

    t.diffusion.training_losses = exploding
    t.run_step(x, y)
    t.diffusion.training_losses = real
    assert t.precision.scale == scale / 2
    for k, v in params(t.model).items():
        assert torch.equal(v, before[k]), f"{k} changed on a skipped step"
    for k, v in t.opt.state_dict()["state"][0].items():
        assert torch.equal(v, opt_before[k]), f"optimizer {k} changed on a skipped step"
    for k, v in t.ema.state_dict(0.9, t.model).items():
        assert torch.equal(v, ema_before[k]), f"EMA {k} changed on a skipped step"

    # the scale is checkpointed and restored
    checkpoint.save(str(tmp_path), 5, t.state_dicts(), t.trainer_state())
    resumed = loop(tmp_path / "other", "fp16")
    resumed.load_state_dicts(checkpoint.resolve(str(tmp_path)))
    assert resumed.precision.scale == scale / 2


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


@pytest.mark.parametrize("flag", ["fp16", "bf16"])
def test_reduced_precision_run_step_is_finite(flag, tmp_path):
    t = loop(tmp_path, flag)
    for _ in range(3):
        x, y = next(t.data)
        t.run_step(x, y)
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
