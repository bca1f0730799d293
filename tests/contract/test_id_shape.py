"""improved_diffusion in issue 38's one shape: the probe and improved_diffusion.sample draw through
one draw(), the samples json says how many network evaluations each sampler spent, and a run
directory is sampled with the weights the training loop recorded (checkpoint.sampling_weights).

All in process on an 8 px, 20-timestep model saved by hand: no training needed.
"""


import json

import numpy as np
import pytest
import torch

from _support.entry import main_in_process
from improved_diffusion import train
from improved_diffusion.task import Task, build_task
from trainkit import checkpoint, npz

MODEL = ["--image_size", "8", "--image_channels", "1", "--num_channels", "32", "--num_res_blocks", "1",
         "--channel_mult", "1,2", "--attention_resolutions", "4", "--num_heads", "1", "--learn_sigma", "True",
         "--diffusion_steps", "20", "--noise_schedule", "cosine", "--class_cond", "True", "--num_classes", "3",
         "--class_dropout_prob", "0.1"]
STEP = 2
EMA = "ema_0.9_"  # not settled at step 2 (0.9**2 = 0.81): only the recorded choice picks it


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """(run directory, its Task) holding one checkpoint at STEP whose EMA is far from the model
    and whose state file records the EMA as the sampling weights."""
    torch.manual_seed(0)
    args = train.create_argparser().parse_args(["--data_dir", "D", "--ema_rate", "0.9", *MODEL])
    task = build_task(args, log=lambda *a: None)
    assert isinstance(task, Task)
    moved = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in task.model.state_dict().items()}
    task.ema.load_state_dict(0.9, moved)
    d = tmp_path_factory.mktemp("run")
    checkpoint.save(str(d), STEP, task.state_dicts(), {**task.trainer_state(), "sample_weights": EMA})
    return d, task


def sample(tmp_path, monkeypatch, capsys, model_path, *flags, name="s", model=MODEL):
    """(images, labels, info json) of improved_diffusion.sample run in process."""
    out = tmp_path / name
    code, err = main_in_process("improved_diffusion.sample", ["--model_path", model_path, *model, "--logdir", out,
                                                              *flags], monkeypatch, capsys)
    assert code == 0, err
    [path] = out.glob("samples_*.npz")
    images, labels = npz.read_samples(str(path))
    return images, labels, npz.read_sample_info(str(path))


def test_a_run_directory_is_sampled_with_the_recorded_weights_as_the_probe_draws_them(run_dir, tmp_path,
                                                                                       monkeypatch, capsys):
    """sample.py on the run directory takes the EMA the state file records (the settled rule
    alone would take the model at step 2), and its samples equal the probe's of those weights,
    seed and sampler bit for bit, labels included, at another batch size."""
    d, task = run_dir
    images, labels, info = sample(tmp_path, monkeypatch, capsys, d, "--sampler", "ddim", "--steps", "10",
                                  "--timestep_respacing", "", "--num_samples", "5", "--seed", "3",
                                  "--batch_size", "2")
    assert info["weights"] == str(d / checkpoint.filename(EMA, STEP))
    probe, probe_labels = task.probe_images(task.state_dicts()[EMA], 5, 3)
    assert np.array_equal(images, probe) and np.array_equal(labels, probe_labels)
    model_images, _ = task.probe_images(task.state_dicts()["model"], 5, 3)
    assert not np.array_equal(images, model_images)  # the check can tell the weights apart


# (sample flags, sampler, network evaluations per image); the model has 20 timesteps
NFE_CASES = [
    ([], "ddpm", 20),
    (["--timestep_respacing", "5"], "ddpm", 5),
    (["--use_ddim", "True", "--timestep_respacing", "ddim4"], "ddim", 4),
    (["--timestep_respacing", "", "--sampler", "ddim", "--steps", "4"], "ddim", 4),
    (["--timestep_respacing", "", "--sampler", "dpmpp_2m", "--steps", "4", "--time_schedule", "logsnr"], "dpmpp_2m", 4),
    (["--timestep_respacing", "", "--sampler", "dpmpp_2m_sde", "--steps", "3"], "dpmpp_2m_sde", 3),
    (["--timestep_respacing", "", "--sampler", "heun", "--steps", "4"], "heun", 7),  # 2N - 1
    (["--timestep_respacing", "", "--sampler", "heun", "--steps", "4", "--guidance_scale", "2"], "heun", 7),
    (["--timestep_respacing", "", "--sampler", "dpmpp_2m_sde", "--steps", "3", "--guidance_scale", "2"],
     "dpmpp_2m_sde", 3),  # a guided evaluation is one forward of twice the rows
]


@pytest.mark.parametrize("flags,sampler,nfe", NFE_CASES, ids=[" ".join(c[0]) or "ddpm-full" for c in NFE_CASES])
def test_the_samples_json_says_the_sampler_and_its_network_evaluations(run_dir, tmp_path, monkeypatch, capsys,
                                                                        flags, sampler, nfe):
    d, _ = run_dir
    _, _, info = sample(tmp_path, monkeypatch, capsys, d / checkpoint.filename("model", STEP), *flags,
                        "--num_samples", "2", "--seed", "7")
    assert (info["sampler"], info["network_evaluations"], info["num_samples"], info["seed"]) == (sampler, nfe, 2, 7)


def test_guided_samples_draw_the_noise_of_the_unguided_ones(run_dir, tmp_path, monkeypatch, capsys):
    """Guidance changes the model's output, not the draws: with the guided network's
    conditional and null rows equal (a model that ignores its label) every sampler gives the
    unguided samples, so x_T, the labels and each step's noise are the same draws."""
    d, task = run_dir
    sd = {k: v.clone() for k, v in task.state_dicts()["model"].items()}
    sd["label_emb.weight"].zero_()  # every label, the null class too, embeds to 0
    path = tmp_path / "blind.pt"
    torch.save(sd, path)
    for flags in (["--sampler", "dpmpp_2m_sde", "--steps", "3"], ["--sampler", "heun", "--steps", "3"]):
        plain = sample(tmp_path, monkeypatch, capsys, path, "--timestep_respacing", "", *flags, "--num_samples", "3",
                       name=f"{flags[1]}-1")
        guided = sample(tmp_path, monkeypatch, capsys, path, "--timestep_respacing", "", *flags, "--num_samples", "3",
                        "--guidance_scale", "3", name=f"{flags[1]}-3")
        assert np.array_equal(plain[1], guided[1])
        assert np.abs(plain[0].astype(int) - guided[0].astype(int)).max() <= 1  # guidance's arithmetic rounds


def test_openai_import_path_keeps_the_task():
    from improved_diffusion import task
    from improved_diffusion.train_util import DiffusionTask, log_loss_dict

    assert DiffusionTask is Task and log_loss_dict is task.log_loss_dict and Task.loss_keys == ("loss",)
    assert train.build_task is build_task


def fp16_task(seed=0):
    torch.manual_seed(seed)
    args = train.create_argparser().parse_args(["--data_dir", "D", "--ema_rate", "0.9,0.99", "--precision", "fp16",
                                                *MODEL])
    lines = []
    return build_task(args, log=lines.append), lines


def test_the_loss_scale_is_saved_per_optimizer_and_an_old_bare_layout_still_loads(tmp_path):
    """trainkit.precision's layout: {"precision": {"model": state}} and the logged
    loss_scale_model; a state file of the earlier layout (one bare Precision state) resumes
    with its scale."""
    task, _ = fp16_task()
    state = task.precision.state_dict()
    state["scaler"]["scale"] = 2.0**7
    task.precision.load_state_dict(state)
    assert set(task.trainer_state()["precision"]) == {"model"}
    assert task.log_extras() == {"loss_scale_model": 2.0**7, "lg_loss_scale": 7.0}  # and openai's key
    old = {"schedule_sampler": task.schedule_sampler.state_dict(), "precision": task.precision.state_dict()}
    checkpoint.save(str(tmp_path), 1, task.state_dicts(), old)
    fresh, _ = fp16_task(seed=1)
    assert fresh.precision.scale == 2.0**20
    fresh.load_state_dicts(checkpoint.resolve(str(tmp_path)))
    assert fresh.precision.scale == 2.0**7


def test_a_missing_ema_file_restarts_that_average_from_the_model_and_says_so(tmp_path):
    """trainkit.ema's one policy: the step lacks ema_0.99_: that average restarts from the loaded
    model weights, with one line naming the file; the present one is loaded as saved."""
    task, _ = fp16_task()
    for rate in task.ema.rates:
        task.ema.load_state_dict(rate, {k: v + rate for k, v in task.model.state_dict().items()})
    states = task.state_dicts()
    checkpoint.save(str(tmp_path), 3, {k: v for k, v in states.items() if k != "ema_0.99_"}, task.trainer_state())
    fresh, lines = fp16_task(seed=1)
    fresh.load_state_dicts(checkpoint.resolve(str(tmp_path)))
    after = fresh.state_dicts()
    for k, v in states["model"].items():
        if v.is_floating_point():
            assert torch.equal(after["ema_0.9_"][k], states["ema_0.9_"][k])
            assert torch.equal(after["ema_0.99_"][k], v)
    assert [line for line in lines if "ema_0.99_000003.pt" in line and "restarts" in line]


def test_a_training_run_declares_its_loss_keys_and_records_its_sampling_weights(digits, tmp_path, monkeypatch,
                                                                                 capsys):
    """improved_diffusion.train through build_task: options.json holds the Task's loss_keys (the
    report reads them) and no discriminator keys; the state file records the weights the Task
    chose, which sample.py on the run directory then takes (its json's `weights`)."""
    run = tmp_path / "run"
    model = MODEL[:MODEL.index("--class_cond")]  # unconditional: the digits have 10 classes
    argv = ["--data_dir", digits(8), *model, "--batch_size", "4", "--max_steps", "3",
            "--ema_rate", "0.1,0.9", "--log_interval", "1", "--logdir", run]
    code, err = main_in_process("improved_diffusion.train", argv, monkeypatch, capsys)
    assert code == 0, err
    options = json.loads((run / "options.json").read_text())
    assert options["loss_keys"] == ["loss"] and options["discriminator_keys"] == []
    ck = checkpoint.resolve(str(run))
    assert ck.step == 3 and ck.state["sample_weights"] == "ema_0.1_"  # 0.1**3 < 1% <= 0.9**3
    _, _, info = sample(tmp_path, monkeypatch, capsys, run, "--num_samples", "2", "--timestep_respacing", "4",
                        model=[])  # the model flags from the run's options.json
    assert info["weights"] == str(run / checkpoint.filename("ema_0.1_", 3))
