"""Classifier-free guidance (Ho & Salimans 2022; improved_diffusion/guidance.py): the guided
output is uncond + w (cond - uncond) for every sampler, w = 1 is the model itself, the null
class exists only when trained with --class_dropout_prob > 0 (openai's layout otherwise), and on
a tiny class-conditional DDPM trained on the digits class accuracy rises with w."""

import contextlib
import glob
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import helpers
from _support.oracles import MIXTURE, SHAPE, MixtureOracle, make_diffusion
from improved_diffusion import samplers
from improved_diffusion.guidance import GuidedModel, check_guidance, guided
from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults
from improved_diffusion.train_util import DiffusionTask
from trainkit.errors import UserError

NULL = 2  # the mixture has components 0 and 1


class CondOracle:
    """A class-conditional stub with known outputs: for label k the mixture's component k
    (its exact E[eps | x_t]), for the null label the whole mixture. With learn_sigma it appends
    variance channels that differ between conditional (0.4 tanh x) and null rows (-0.7), so that
    guiding them would show. Records the rows of every call."""

    null_class = NULL

    def __init__(self, diffusion, learn_sigma=False):
        self.oracle = MixtureOracle(diffusion, **MIXTURE)
        self.learn_sigma = learn_sigma
        self.rows = []

    def __call__(self, x, t, y):
        self.rows.append(x.shape[0])
        null = y == NULL
        out = torch.empty_like(x)
        if (~null).any():
            out[~null] = self.oracle(x[~null], t[~null], y[~null])
        if null.any():
            out[null] = self.oracle(x[null], t[null])
        if not self.learn_sigma:
            return out
        var = torch.where(null.reshape(-1, 1, 1, 1), torch.full_like(x, -0.7), 0.4 * torch.tanh(x))
        return torch.cat([out, var], dim=1)


class Formula:
    """The guided output written out: two separate calls of the stub, then the formula (the
    variance channels, if any, the conditional call's)."""

    def __init__(self, stub, w):
        self.stub, self.w = stub, w

    def __call__(self, x, t, y):
        cond, uncond = self.stub(x, t, y), self.stub(x, t, torch.full_like(y, NULL))
        C = x.shape[1]
        mean = uncond[:, :C] + self.w * (cond[:, :C] - uncond[:, :C])
        return torch.cat([mean, cond[:, C:]], dim=1)


@pytest.mark.parametrize("learn_sigma", [False, True])
@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_the_guided_output_is_the_formula_for_each_sampler(sampler, learn_sigma):
    steps = 5
    spec = dict(timestep_respacing=str(steps)) if sampler == "ddpm" else {}
    d = make_diffusion(learn_sigma=learn_sigma, **spec)
    x_T = torch.randn(12, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(12) % 2

    def run(model):
        g = torch.Generator().manual_seed(1)
        return samplers.sample_loop(model, d, x_T.clone(), sampler=sampler, steps=steps, clip_denoised=False,
                                    model_kwargs={"y": y},
                                    noise_fn=lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype))

    for w in (0.0, 3.0):
        stub = CondOracle(d, learn_sigma)
        got = run(GuidedModel(stub, w))
        assert torch.equal(got, run(Formula(CondOracle(d, learn_sigma), w))), (sampler, w)
        # one forward per model evaluation, on the conditional and the null rows together
        assert stub.rows == [24] * samplers.nfe(sampler, steps)
    # the formula's ends: w = 0 samples the unconditional model (its mean; the variance stays the
    # conditional rows'), and guidance changes the samples
    if not learn_sigma:
        assert torch.equal(run(Formula(CondOracle(d), 0.0)),
                           run(lambda x, t, y: CondOracle(d)(x, t, torch.full_like(y, NULL))))
    assert (run(GuidedModel(CondOracle(d, learn_sigma), 3.0)) - run(CondOracle(d, learn_sigma))).abs().max() > 0.05


def test_scale_1_is_the_model_itself_so_samples_are_todays_bit_for_bit():
    d = make_diffusion()
    stub = CondOracle(d)
    assert guided(stub, 1.0) is stub and guided(stub, 1) is stub
    assert isinstance(guided(stub, 2.0), GuidedModel)


def test_control_entry_points_decode_through_the_guided_model():
    """interpolate and edit (control.Decoder): the same wrapper, inside InBlocks."""
    from improved_diffusion import control

    d = make_diffusion()
    args = SimpleNamespace(guidance_scale=2.5, batch_invariant=False, time_schedule="uniform", clip_denoised=False,
                           sampler="ddim", steps=4, batch_size=8)
    dec = control.Decoder(CondOracle(d), d, args, SimpleNamespace(autocast=contextlib.nullcontext))
    assert isinstance(dec.model, GuidedModel) and dec.model.scale == 2.5
    x_T = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    want = samplers.sample_loop(Formula(CondOracle(d), 2.5), d, x_T, sampler="ddim", steps=4, clip_denoised=False,
                                model_kwargs={"y": y})
    assert torch.equal(dec.decode(x_T, y).double(), want.float().double())


def small_model(**kw):
    flags = {**model_and_diffusion_defaults(), "image_size": 8, "num_channels": 32, "num_res_blocks": 1,
             "attention_resolutions": "none", "channel_mult": "1,2", "diffusion_steps": 100, **kw}
    return create_model_and_diffusion(**flags)


def test_the_null_class_is_an_extra_label_row_only_with_class_dropout():
    """p = 0 keeps openai's state_dict (num_classes label rows: released class-conditional
    checkpoints load strict=True); p > 0 adds one row, label num_classes, and nothing else."""
    plain, _ = small_model(class_cond=True, num_classes=10)
    openai_layout = {k: v.shape for k, v in plain.state_dict().items()}
    assert openai_layout["label_emb.weight"][0] == 10 and plain.null_class is None
    with_null, _ = small_model(class_cond=True, num_classes=10, class_dropout_prob=0.1)
    layout = {k: v.shape for k, v in with_null.state_dict().items()}
    assert layout.pop("label_emb.weight")[0] == 11 and with_null.null_class == 10
    assert layout == {k: v for k, v in openai_layout.items() if k != "label_emb.weight"}
    again, _ = small_model(class_cond=True, num_classes=10, class_dropout_prob=0.0)
    again.load_state_dict(plain.state_dict(), strict=True)
    with pytest.raises(ValueError, match="--class_cond True"):
        small_model(class_dropout_prob=0.1)


def test_class_dropout_replaces_labels_by_the_null_class_at_rate_p():
    model, diffusion = small_model(class_cond=True, num_classes=10, class_dropout_prob=0.25)
    task = DiffusionTask(model=model, diffusion=diffusion, class_dropout_prob=0.25)
    y = torch.arange(20000) % 10
    torch.manual_seed(0)
    z = task.drop_labels(y)
    dropped = z == 10
    assert abs(dropped.float().mean().item() - 0.25) < 0.015  # 5 standard errors
    assert torch.equal(z[~dropped], y[~dropped])


def test_a_training_step_feeds_the_model_dropped_labels_and_p_0_draws_nothing(monkeypatch):
    model, diffusion = small_model(class_cond=True, num_classes=10, class_dropout_prob=0.5)
    task = DiffusionTask(model=model, diffusion=diffusion, class_dropout_prob=0.5)
    seen = []
    real = diffusion.training_losses

    def spy(net, x, t, model_kwargs=None, noise=None):
        seen.append(model_kwargs["y"].clone())
        return real(net, x, t, model_kwargs=model_kwargs)
    monkeypatch.setattr(diffusion, "training_losses", spy)
    y = torch.arange(32) % 10
    torch.manual_seed(0)
    task.forward_backward(torch.zeros(32, 3, 8, 8), y)
    (got,) = seen
    kept = got != 10
    assert 4 < (~kept).sum() < 28 and torch.equal(got[kept], y[kept])
    plain, _ = small_model(class_cond=True, num_classes=10)
    task0 = DiffusionTask(model=plain, diffusion=diffusion)
    monkeypatch.setattr(task0, "drop_labels", lambda labels: pytest.fail("p = 0 must not touch the labels"))
    task0.forward_backward(torch.zeros(4, 3, 8, 8), y[:4])
    assert torch.equal(seen[-1], y[:4])


@pytest.mark.parametrize("flags,message", [
    (dict(class_cond=True, class_dropout_prob=0.0), "--guidance_scale 3 needs a model trained with "
                                                    "--class_dropout_prob > 0"),
    (dict(class_cond=False, class_dropout_prob=0.0), "--guidance_scale 3: the model is not class-conditional"),
])
def test_guidance_of_a_model_trained_without_dropout_is_one_line(flags, message):
    with pytest.raises(UserError, match=message):
        check_guidance(SimpleNamespace(guidance_scale=3.0, **flags))
    check_guidance(SimpleNamespace(guidance_scale=1.0, **flags))  # no guidance: nothing to refuse


def test_the_sampler_refuses_guidance_of_a_model_trained_without_dropout(trained_run, tmp_path):
    proc = helpers.py("improved_diffusion.sample", "--model_path", trained_run("id_cond"), "--logdir", tmp_path / "s",
                      "--num_samples", "2", "--guidance_scale", "3")
    assert proc.returncode == 2, helpers.describe(proc)
    lines = helpers.error_lines(proc)
    assert len(lines) == 1 and "--guidance_scale 3" in lines[0] and "--class_dropout_prob" in lines[0], lines
    assert not (tmp_path / "s").exists()


# A class-conditional DDPM on the 8 px digits (datasets/digits.py --size 8), small enough to train
# 150 steps in about half a minute on 2 cores; labels dropped with p = 0.2.
CDDPM = ["--image_size", "8", "--image_channels", "1", "--num_channels", "32", "--num_res_blocks", "1",
         "--channel_mult", "1,2", "--attention_resolutions", "none", "--num_heads", "1", "--learn_sigma", "True",
         "--diffusion_steps", "100", "--noise_schedule", "cosine", "--lr", "2e-3", "--batch_size", "16",
         "--ema_rate", "0.99", "--log_interval", "50", "--save_interval", "1000", "--class_cond", "True",
         "--num_classes", "10", "--class_dropout_prob", "0.2", "--max_steps", "150"]
SCALES = (0.0, 1.0, 3.0)


@pytest.mark.slow
def test_class_accuracy_rises_with_the_guidance_scale(digits, tmp_path):
    """The known trade-off's first half: the digit classifier (evaluations/digits_features.py)
    recognises the asked class more often as w grows. 120 samples per w, dpmpp_2m_sde-10. Measured
    when written: accuracy 0.133 at w = 0 (the unconditional model: chance), 0.558 at w = 1, 0.908
    at w = 3 (standard errors <= 0.046), so the margins asserted (0.15 and 0.1) leave 0.27 and 0.25,
    over 5 standard errors. The whole test takes about 30 s on 2 cores."""
    from evaluations import digits_features

    run_dir = tmp_path / "cddpm"
    proc = helpers.launch("local", 1, "improved_diffusion.train", "--data_dir", digits(8), "--logdir", run_dir, *CDDPM)
    assert proc.returncode == 0, helpers.describe(proc)
    assert json.loads((run_dir / "options.json").read_text())["class_dropout_prob"] == 0.2
    accuracy = {}
    for w in SCALES:
        out = tmp_path / f"w{w:g}"
        proc = helpers.launch("local", 1, "improved_diffusion.sample", "--model_path", run_dir, "--logdir", out,
                              "--num_samples", "120", "--batch_size", "40", "--sampler", "dpmpp_2m_sde", "--steps",
                              "10", "--time_schedule", "logsnr", "--guidance_scale", w, "--seed", "1")
        assert proc.returncode == 0, helpers.describe(proc)
        (path,) = glob.glob(str(out / "samples_*.npz"))
        with np.load(path) as f:
            accuracy[w] = digits_features.accuracy(f["arr_0"], f["arr_1"])
    print("class accuracy by guidance scale:", accuracy)
    assert accuracy[0.0] + 0.15 < accuracy[1.0] and accuracy[1.0] + 0.1 < accuracy[3.0], accuracy


def test_a_bare_checkpoint_with_a_null_class_fits_its_flags(tmp_path):
    """A model file without options.json: its label rows are num_classes + 1 when sampled with
    --class_dropout_prob > 0, so the flags given are not reported as contradicting it."""
    from improved_diffusion.cli import checkpoint_contradictions

    flags = dict(class_cond=True, num_classes=10, class_dropout_prob=0.1)
    model, _ = small_model(**flags)
    path = tmp_path / "model000001.pt"
    torch.save(model.state_dict(), path)
    args = SimpleNamespace(**{**model_and_diffusion_defaults(), "image_size": 8, "num_channels": 32,
                              "image_channels": 3, **flags, "model_path": str(path)})
    assert checkpoint_contradictions(args, model.state_dict()) == []
    args.class_dropout_prob = 0.0
    assert checkpoint_contradictions(args, model.state_dict()) == ["--num_classes 10, but the checkpoint has 11"]
