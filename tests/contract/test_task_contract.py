"""What every family's `trainkit.loop.Task` promises the loop, checked once per family, in
process, on tiny networks (8 px, 1 channel):

- resume: save -> load into a differently initialised task -> one more step equals the step of
  the task that never stopped, bit for bit (weights, EMA, optimizer, trainer state);
- precision: inside the step, autocast's dtype is fp16 / bf16 (the activations of the
  networks' layers have it) while the weights stay fp32;
- fp16 overflow: a step whose gradients are not finite moves neither the weights, nor the
  optimizer state, nor the EMA, and says so in its statistics (`skipped`, `skipped_d`);
- the quality probe: `probe_images` samples the weights it is given (not the live network),
  on the same noise every call, as uint8 images (with labels for a conditional model);
- the gradient norm is logged under one key (`grad_norm`, D's `grad_norm_d`) and is the true,
  unscaled norm of the gradients the optimizer stepped with.

The end-to-end tests (kill -9, launchers) run the real entry points; this module is where a
new family proves it fits the loop.
"""

import copy
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from trainkit import checkpoint, run

FAMILIES = ("improved_diffusion", "ddgan", "dcgan", "cdcgan", "gan", "cgan")
ADVERSARIAL = ("ddgan", "dcgan", "cdcgan", "gan", "cgan")
NUM_CLASSES = 3
BATCH = 8


@dataclass
class Case:
    """A family's task and the handles the checks need: for each optimizer, (optimizer,
    precision, module, EMA or None, statistics suffix)."""
    task: object
    players: list
    conditional: bool = False
    networks: dict = field(default_factory=dict)  # name -> module whose layers run under autocast

    def batch(self, i):
        g = torch.Generator().manual_seed(100 + i)
        x = torch.rand(BATCH, 1, 8, 8, generator=g) * 2 - 1
        y = torch.randint(NUM_CLASSES, (BATCH,), generator=g) if self.conditional else None
        return x, y

    def step(self, i):
        return self.task.step(self.batch(i), i, 0)


def _diffusion(precision, seed):
    from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults
    from improved_diffusion.train_util import DiffusionTask

    torch.manual_seed(seed)
    kw = model_and_diffusion_defaults()
    kw.update(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="4",
              learn_sigma=True, diffusion_steps=10, noise_schedule="cosine", image_channels=1)
    model, diffusion = create_model_and_diffusion(**kw)
    task = DiffusionTask(model=model, diffusion=diffusion, lr=1e-3, ema_rate="0.9", precision_mode=precision,
                         log=lambda *a: None, probe_shape=(1, 8, 8))
    return Case(task, [(task.opt, task.precision, task.model, task.ema, "")], networks={"model": task.model})


def _ddgan(precision, seed):
    from _support.tasks import ddgan_networks
    from ddgan import train, trainer
    from ddgan.diffusion import Diffusion

    o = vars(train.create_parser().parse_args(
        ["--image_size", "8", "--num_channels", "1", "--num_channels_dae", "8", "--ch_mult", "1", "2",
         "--num_res_blocks", "1", "--attn_resolutions", "4", "--nz", "4", "--z_emb_dim", "8", "--t_emb_dim", "8",
         "--n_mlp", "1", "--ngf", "2", "--num_timesteps", "3", "--dataset", "digits", "--batch_size", str(BATCH),
         "--lazy_reg", "2", "--use_ema", "--ema_decay", "0.9", "--precision", precision]))
    g, d = ddgan_networks(o, seed)
    task = trainer.Trainer(o, g, d, Diffusion(o["num_timesteps"]), torch.device("cpu"))
    return Case(task, [(task.opt_g, task.prec_g, task.g_raw, lambda: task.ema, ""),
                       (task.opt_d, task.prec_d, task.d_raw, None, "_d")],
                networks={"generator": task.g_raw, "discriminator": task.d_raw})


def _gan(kind):
    def build(precision, seed):
        from gans import models
        from gans.trainer import GANTrainer

        torch.manual_seed(seed)
        conditional = kind in models.CONDITIONAL
        G, D = models.create_models(kind, 8, nz=4, ngf=4, ndf=4, channels=1,
                                    num_classes=NUM_CLASSES if conditional else 0)
        task = GANTrainer(G, D, device="cpu", precision_mode=precision, ema_rates="0.9")
        players = [(task.opt_g, task.prec_g, task.G, task.ema, ""), (task.opt_d, task.prec_d, task.D, None, "_d")]
        return Case(task, players, conditional=conditional, networks={"generator": task.G, "discriminator": task.D})
    return build


BUILD = {"improved_diffusion": _diffusion, "ddgan": _ddgan, **{k: _gan(k) for k in ("dcgan", "cdcgan", "gan", "cgan")}}


def build(family, precision="fp32", seed=0) -> Case:
    return BUILD[family](precision, seed)


def _ema(player):
    ema = player[3]
    return ema() if callable(ema) else ema


def _same(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# --- resume ------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_and_one_more_step_is_bit_identical_to_not_stopping(family, precision, tmp_path):
    a = build(family, precision, seed=0)
    for i in range(2):
        a.step(i)
    state = dict(a.task.trainer_state(), rng=run.rng_state())
    checkpoint.save(str(tmp_path), 2, a.task.state_dicts(), state)
    a.step(2)
    straight = a.task.state_dicts()

    b = build(family, precision, seed=1)  # other initial weights: everything must come from the files
    ck = checkpoint.latest(str(tmp_path))
    assert ck.step == 2
    b.task.load_state_dicts(ck)
    run.set_rng_state(ck.state["rng"])
    resumed_state = b.task.trainer_state()
    b.step(2)
    resumed = b.task.state_dicts()
    assert straight.keys() == resumed.keys()
    for prefix in straight:
        assert _same(straight[prefix], resumed[prefix]), f"{family} {precision}: {prefix} differs after resume"
    # the loss scale (and any other trainer state) came back from the checkpoint
    assert _same(resumed_state, {k: v for k, v in ck.state.items() if k in resumed_state})


# --- precision ---------------------------------------------------------------------------

@pytest.mark.parametrize("precision,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_precision_mode_applies_inside_the_step(family, precision, dtype):
    case = build(family, precision)
    seen = {name: set() for name in case.networks}
    hooks = []
    for name, net in case.networks.items():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d)):
                hooks.append(m.register_forward_hook(
                    lambda mod, inp, out, name=name: seen[name].add(out.dtype)))
    try:
        case.step(0)
    finally:
        for h in hooks:
            h.remove()
    for name, dtypes in seen.items():
        assert dtype in dtypes, f"{family} {precision}: {name}'s layers ran in {dtypes}, never in {dtype}"
    for _, _, module, _, _ in case.players:
        assert all(p.dtype == torch.float32 for p in module.parameters())  # master weights stay fp32


@pytest.mark.parametrize("family", FAMILIES)
def test_an_fp16_overflow_skips_the_step_and_the_ema_update(family):
    case = build(family, "fp16")
    for i in range(3):  # the optimizers have state; the first steps may also overflow at the initial scale
        case.step(i)
    scales = [prec.scale for _, prec, _, _, _ in case.players]
    before = _snapshots(case)
    hooks = [next(iter(module.parameters())).register_hook(lambda g: torch.full_like(g, float("inf")))
             for _, _, module, _, _ in case.players]
    try:
        stats = case.step(3)
    finally:
        for h in hooks:
            h.remove()
    after = _snapshots(case)
    for (_, prec, _, _, suffix), scale, b, a in zip(case.players, scales, before, after):
        assert float(stats[f"skipped{suffix}"]) == 1.0, f"{family}: skipped{suffix} not logged"
        assert prec.scale == scale / 2, f"{family}: the loss scale{suffix} was not lowered"
        for what in ("weights", "opt", "ema"):
            assert _same(b[what], a[what]), f"{family}: {what}{suffix} changed on a skipped step"
    # and a good step afterwards does move them again
    stats = case.step(4)
    assert all(float(stats[f"skipped{s}"]) == 0.0 for *_, s in case.players)
    assert not _same(after[0]["weights"], _snapshots(case)[0]["weights"])


def _snapshots(case):
    out = []
    for player in case.players:
        opt, _, module, _, _ = player
        ema = _ema(player)
        out.append({
            "weights": [p.detach().clone() for p in module.parameters()],
            "opt": copy.deepcopy(opt.state_dict()["state"]),
            "ema": None if ema is None else {r: [s.clone() for s in v] for r, v in ema.shadows.items()},
        })
    return out


# --- the gradient norm -------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_gradient_norm_is_logged_under_one_key_unscaled(family, precision):
    case = build(family, precision)
    at_step = {}
    for opt, _, module, _, suffix in case.players:
        def record(optimizer, args, kwargs, module=module, suffix=suffix):
            grads = [p.grad.double() for p in module.parameters() if p.grad is not None]
            at_step[suffix] = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))
        opt.register_step_pre_hook(record)
    stats = {}
    for i in range(25):  # under fp16 the first steps may be skipped (2^20 is the diffusion's first scale)
        at_step.clear()
        stats = case.step(i)
        if all(float(stats[f"skipped{s}"]) == 0.0 for *_, s in case.players):
            break
    expected = {"grad_norm", "skipped"} | ({"grad_norm_d", "skipped_d"} if family in ADVERSARIAL else set())
    assert expected <= set(stats), f"{family} logs {sorted(stats)}"
    for *_, suffix in case.players:
        logged = float(stats[f"grad_norm{suffix}"])
        assert logged > 0 and logged == pytest.approx(at_step[suffix], rel=1e-5), (family, suffix)


# --- the quality probe ---------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_the_quality_probe_samples_the_given_weights_on_fixed_noise(family):
    case = build(family)
    task = case.task
    case.step(0)
    weights = task.state_dicts()[task.sample_weights(1)]
    live = copy.deepcopy(task.state_dicts())
    images, labels = task.probe_images(weights, 5, 0)
    again, labels_again = task.probe_images(weights, 5, 0)
    assert images.dtype == np.uint8 and images.shape == (5, 8, 8, 1)
    assert np.array_equal(images, again)  # the same noise every time: the points are comparable
    if case.conditional:
        assert labels.shape == (5,) and np.array_equal(labels, labels_again) and set(labels) <= set(range(NUM_CLASSES))
    else:
        assert labels is None
    moved = {k: v + 0.3 if torch.is_tensor(v) and v.is_floating_point() else v for k, v in weights.items()}
    assert not np.array_equal(task.probe_images(moved, 5, 0)[0], images)  # it samples `weights`
    assert _same(task.state_dicts(), live)  # and leaves the training networks as they were
