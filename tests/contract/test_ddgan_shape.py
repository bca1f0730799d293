"""Issue 38 for DDGAN: one Task shape (ddgan.task), trainkit's checkpoint and sampling
boilerplate, one draw for the sampler and the probe, and the samples info json. And the sampler
given an explicit averaged file (ema_0.99_<step>.pt) samples that file."""

import copy
import json

import numpy as np
import pytest
import torch

from _support.entry import main_in_process
from _support.tasks import ddgan_networks
from ddgan import export, sample, task, train, trainer
from ddgan.diffusion import Diffusion
from ddgan.ncsnpp import GeneratorConfig, NCSNpp
from trainkit import checkpoint, npz, optim, run
from trainkit.errors import UserError

TINY = ["--image_size", "8", "--num_channels", "1", "--num_channels_dae", "8", "--ch_mult", "1", "2",
        "--num_res_blocks", "1", "--attn_resolutions", "4", "--nz", "4", "--z_emb_dim", "8", "--t_emb_dim", "8",
        "--n_mlp", "1", "--ngf", "2", "--num_timesteps", "3", "--dataset", "digits", "--batch_size", "8"]
# the model flags ddgan.sample needs for a step without options.json
MODEL = TINY[:-2]
assert MODEL[-1] == "digits"


def options(*extra):
    return vars(train.create_parser().parse_args(TINY + list(extra)))


def make_task(*extra, seed=0, log=None):
    o = options(*extra)
    g, d = ddgan_networks(o, seed)
    return task.Task(o, g, d, Diffusion(o["num_timesteps"]), torch.device("cpu"), log=log)


def steps(t, n):
    gen = torch.Generator().manual_seed(5)
    stats = None
    for i in range(n):
        stats = t.step((torch.rand(8, 1, 8, 8, generator=gen) * 2 - 1, None), i, 0)
    return stats


def save(t, run_dir, step):
    checkpoint.save(str(run_dir), step, t.state_dicts(),
                    dict(t.trainer_state(), rng=run.rng_state(), sample_weights=t.sample_weights(step)))


def weights_with(value_offset, g):
    return {k: v + value_offset if v.is_floating_point() else v for k, v in g.state_dict().items()}


# --- one Task shape ------------------------------------------------------------------------

def test_the_task_lives_in_ddgan_task_under_its_old_names_too():
    assert trainer.Trainer is task.Task and train.build_task is task.build_task
    t = task.build_task(train.create_parser().parse_args(TINY + ["--use_ema"]))
    assert isinstance(t, trainer.Trainer) and t.ema is not None


def test_declared_loss_and_discriminator_keys_are_logged_keys():
    t = make_task("--lazy_reg", "1")
    stats = steps(t, 1)
    assert set(task.Task.loss_keys) == {"errD", "errG"}
    assert set(task.Task.loss_keys) <= set(stats) and set(task.Task.discriminator_keys) <= set(stats)
    d_keys = set(task.Task.discriminator_keys)
    assert {"errD", "errD_real", "errD_fake", "r1", optim.D_ACCURACY, "grad_norm_d"} <= d_keys
    assert "errG" not in task.Task.discriminator_keys


# --- trainkit's checkpoint boilerplate --------------------------------------------------------

def test_a_missing_ema_file_on_resume_restarts_the_average_from_the_model_with_one_line(tmp_path):
    """trainkit.ema's one policy (DDGAN raised before): the EMA restarts from the loaded weights."""
    plain = make_task()
    steps(plain, 1)
    save(plain, tmp_path, 1)  # trained without --use_ema: no ema_0.9_ file
    lines = []
    resumed = make_task("--use_ema", "--ema_decay", "0.9", seed=1, log=lines.append)
    resumed.load_state_dicts(checkpoint.latest(str(tmp_path)))
    assert len(lines) == 1 and "ema_0.9_000001.pt" in lines[0] and "restarts" in lines[0]
    for s, p in zip(resumed.ema.shadows[0.9], plain.g_raw.parameters()):
        assert torch.equal(s, p)


def test_loss_scales_are_one_key_per_optimizer_logged_and_the_old_layout_loads(tmp_path):
    t = make_task("--precision", "fp16")
    steps(t, 2)
    state = t.trainer_state()
    assert set(state["precision"]) == {"g", "d"} and "precision_d" not in state
    assert t.log_extras()["loss_scale_g"] == t.prec_g.scale and t.log_extras()["loss_scale_d"] == t.prec_d.scale
    assert "loss_scale_g" not in make_task().log_extras()  # fp32 keeps no scale
    # a state file of the layout before (precision_d / precision_g) still gives back the scales
    old = {k: v for k, v in state.items() if k != "precision"}
    old.update(precision_d=state["precision"]["d"], precision_g=state["precision"]["g"])
    checkpoint.save(str(tmp_path), 2, t.state_dicts(), dict(old, rng=run.rng_state()))
    fresh = make_task("--precision", "fp16", seed=1)
    fresh.load_state_dicts(checkpoint.latest(str(tmp_path)))
    assert t.prec_d.scale != 2.0 ** 16  # fp16's first step was skipped: a scale a fresh task does not have
    assert fresh.prec_d.scale == t.prec_d.scale and fresh.prec_g.scale == t.prec_g.scale


# --- one draw, the sampler's info --------------------------------------------------------------

def test_the_probe_and_the_sampler_draw_the_same_images_and_the_sampler_says_what_it_did(
        tmp_path, monkeypatch, capsys):
    t = make_task("--use_ema", "--ema_decay", "0.9")
    steps(t, 2)
    save(t, tmp_path / "run", 2)
    code, err = main_in_process(sample, ["--model_path", tmp_path / "run", "--num_samples", 5, "--batch_size", 2,
                                         "--seed", 3, "--logdir", tmp_path / "s", *MODEL], monkeypatch, capsys)
    assert code == 0, err
    path = tmp_path / "s" / "samples_5x8x8x1.npz"
    images, _ = npz.read_samples(str(path))
    probe, labels = t.probe_images(t.state_dicts()["ema_0.9_"], 5, 3)
    assert labels is None and np.array_equal(images, probe)
    info = npz.read_sample_info(str(path))
    assert {k: info[k] for k in ("sampler", "network_evaluations", "num_samples", "seed")} == {
        "sampler": sample.SAMPLER, "network_evaluations": 3, "num_samples": 5, "seed": 3}
    assert info["weights"] == "ema_0.9_000002.pt"
    assert json.loads((tmp_path / "s" / "samples_5x8x8x1.json").read_text()) == info


# --- which weights are sampled --------------------------------------------------------------

@pytest.fixture
def three_averages(tmp_path):
    """A step with model, ema_0.99_ and ema_kimg0.1_ files of different weights, the half-life
    average recorded as its sampling weights (as ddgan.train --use_ema --ema_kimg records it)."""
    o = options()
    g = NCSNpp(GeneratorConfig.from_options(o))
    files = {"model": weights_with(0.0, g), "ema_0.99_": weights_with(0.2, g), "ema_kimg0.1_": weights_with(-0.2, g)}
    checkpoint.save(str(tmp_path / "run"), 2, files, {"rng": [], "sample_weights": "ema_kimg0.1_"})
    return tmp_path / "run", files, g


def sampled(tmp_path, model_path, name, monkeypatch, capsys, *extra):
    code, err = main_in_process(sample, ["--model_path", model_path, "--num_samples", 2, "--logdir", tmp_path / name,
                                         *MODEL, *extra], monkeypatch, capsys)
    assert code == 0, err
    return npz.read_samples(str(tmp_path / name / "samples_2x8x8x1.npz"))[0], \
        npz.read_sample_info(str(tmp_path / name / "samples_2x8x8x1.npz"))["weights"]


def drawn(g, weights):
    g = copy.deepcopy(g)
    g.load_state_dict(weights)
    g.eval()
    from trainkit import sampling

    return sample.draw(g, Diffusion(3), sampling.PerSampleRandom(0, range(2), "cpu"), (1, 8, 8), 4)[0]


def test_an_explicitly_named_ema_file_is_sampled_as_named(three_averages, tmp_path, monkeypatch, capsys):
    run_dir, files, g = three_averages
    images, used = sampled(tmp_path, run_dir / "ema_0.99_000002.pt", "named", monkeypatch, capsys)
    assert used == "ema_0.99_000002.pt"
    assert np.array_equal(images, drawn(g, files["ema_0.99_"]))
    assert not np.array_equal(images, drawn(g, files["ema_kimg0.1_"]))
    # the run directory, or its model file (which stands for the step), samples the recorded average
    for name, path in (("dir", run_dir), ("model", run_dir / "model000002.pt")):
        images, used = sampled(tmp_path, path, name, monkeypatch, capsys)
        assert used == "ema_kimg0.1_000002.pt" and np.array_equal(images, drawn(g, files["ema_kimg0.1_"]))
    # --weights raw takes the step's raw generator even when an average is named
    _, used = sampled(tmp_path, run_dir / "ema_0.99_000002.pt", "raw", monkeypatch, capsys, "--weights", "raw")
    assert used == "model000002.pt"
    # ddgan.export of the named file exports that file
    out = tmp_path / "netG_2.pth"
    assert export.export(str(run_dir / "ema_0.99_000002.pt"), str(out)).endswith("ema_0.99_000002.pt")


def test_a_step_without_a_record_samples_the_settled_ema_not_the_first_one(tmp_path):
    """trainkit.checkpoint.sampling_weights: at step 100, 0.999**100 = 0.90 of the initial weights
    is left in ema_0.999_ (unsettled), 0.9**100 in ema_0.9_ (settled); before, ddgan took the
    first EMA file by name (ema_0.999_)."""
    g = NCSNpp(GeneratorConfig.from_options(options()))
    sd = g.state_dict()
    checkpoint.save(str(tmp_path), 100, {"model": sd, "ema_0.999_": sd, "ema_0.9_": sd}, {"rng": []})
    ck = checkpoint.resolve(str(tmp_path))
    assert sample.pick_weights(ck, "auto")[0] == "ema_0.9_"
    assert sample.pick_weights(ck, "ema", ema_decay=0.999)[0] == "ema_0.9_"
    checkpoint.save(str(tmp_path / "young"), 3, {"model": sd, "ema_0.999_": sd}, {"rng": []})
    young = checkpoint.resolve(str(tmp_path / "young"))
    assert sample.pick_weights(young, "auto")[0] == "model"  # nothing settled: the raw model
    assert sample.pick_weights(young, "ema", ema_decay=0.999)[0] == "ema_0.999_"  # asked for: the run's EMA


# --- the loop's flags: trainkit's, with DDGAN's spellings as aliases ------------------------------

def test_the_loop_flags_are_trainkits_with_ddgans_defaults_and_spellings():
    from trainkit import loopflags

    parser = train.create_parser()
    actions = parser._option_string_actions
    for name, kind in loopflags.TYPES.items():
        assert actions[f"--{name}"].type is kind, name
    o = vars(parser.parse_args(TINY + ["--resume"]))  # the reference's bare --resume
    assert o["resume_checkpoint"] == "auto"
    assert (o["seed"], o["log_interval"], o["save_interval"], o["max_steps"]) == (1024, 100, 0, 0)


def test_ema_rate_is_use_ema_with_that_decay_and_contradictions_are_one_line():
    o = options("--ema_rate", "0.99")
    train.check_options(o)
    assert o["use_ema"] and o["ema_decay"] == 0.99
    t = task.build_task(train.create_parser().parse_args(TINY + ["--ema_rate", "0.99"]))
    assert t.ema.rates == [0.99] and "ema_0.99_" in t.state_dicts()
    for extra, words in ((["--ema_rate", "0.99,0.9"], "give one rate"),
                         (["--ema_rate", "0.99", "--use_ema"], "name two EMAs")):
        with pytest.raises(UserError, match=words):
            train.check_options(options(*extra))


def test_a_training_run_records_the_declared_keys_in_its_options(trained_run):
    """trainkit.loop writes the Task's declarations into options.json: what the report reads
    instead of finding DDGAN's errD by its prefix."""
    options_json = json.loads((trained_run("ddgan_small") / "options.json").read_text())
    assert options_json["loss_keys"] == ["errD", "errG"]
    assert options_json["discriminator_keys"] == list(task.Task.discriminator_keys)
