"""The trainer, sampler and NLL evaluator as a user runs them: real processes, real launchers,
files written and read back."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers
from _support.checks import assert_same
from _support.flags import ID_FLAGS as FLAGS
from _support.flags import ID_TINY as TINY


def train(launcher, nproc, data, logdir, *extra):
    proc = helpers.launch(launcher, nproc, "improved_diffusion.train", "--data_dir", data, "--logdir", logdir,
                          *TINY, *extra, flag_files=[FLAGS])
    assert proc.returncode == 0, helpers.describe(proc)
    return proc


def losses(run_dir):
    with open(Path(run_dir) / "progress.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")}


def assert_same_checkpoint(dir_a, dir_b, step):
    for prefix in ("model", "ema_0.99_", "ema_0.999_", "opt"):
        name = f"{prefix}{step:06d}.pt"
        assert_same(torch.load(Path(dir_a) / name, weights_only=True),
                    torch.load(Path(dir_b) / name, weights_only=True), name)
    sa = torch.load(Path(dir_a) / f"state{step:06d}.pt", weights_only=True)
    sb = torch.load(Path(dir_b) / f"state{step:06d}.pt", weights_only=True)
    for key in ("rng", "data", "schedule_sampler", "precision", "step"):
        assert_same(sa[key], sb[key], f"state.{key}")


def sample(launcher, nproc, model_path, logdir, batch_size):
    proc = helpers.launch(launcher, nproc, "improved_diffusion.sample", "--model_path", model_path,
                          "--logdir", logdir, "--num_samples", "9", "--batch_size", str(batch_size),
                          "--timestep_respacing", "8", "--seed", "5")  # model flags come from the run dir
    assert proc.returncode == 0, helpers.describe(proc)
    with np.load(Path(logdir) / "samples_9x16x16x1.npz") as f:
        return f["arr_0"], f["arr_1"]


@pytest.fixture(scope="module")
def straight(digits, tmp_path_factory):
    """10 steps under mpiexec with 2 ranks, checkpoints at 5 and 10: the reference run."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train("mpiexec", 2, digits(16), run_dir, "--max_steps", "10", "--save_interval", "5", *SAMPLER)
    return run_dir


SAMPLER = ["--schedule_sampler", "loss-second-moment"]  # its history is gathered from both ranks


@pytest.mark.slow
def test_mpiexec_loss_falls_and_the_importance_sampler_hears_both_ranks(straight):
    loss = losses(straight)
    assert np.mean([loss[9], loss[10]]) < 0.8 * np.mean([loss[1], loss[2]]), loss
    assert json.loads((straight / "options.json").read_text())["max_steps"] == 10
    history = torch.load(straight / "state000010.pt", weights_only=True)["schedule_sampler"]
    assert int(history["loss_counts"].sum()) == 10 * 8  # 2 ranks x 4 losses per step


@pytest.mark.slow
def test_torchrun_gives_the_bits_of_mpiexec(straight, digits, tmp_path):
    """The launcher does not change the numbers: 10 steps under torchrun are the 10 under
    mpiexec, bit for bit. (Stop and resume under the launchers: tests/e2e/test_trainkit_dist.py.)"""
    run_dir = tmp_path / "torchrun"
    train("torchrun", 2, digits(16), run_dir, "--max_steps", "10", "--save_interval", "5", *SAMPLER)
    assert_same_checkpoint(straight, run_dir, 10)


@pytest.mark.slow
def test_sampling_is_independent_of_ranks_and_batch_size(straight, tmp_path):
    images2, labels2 = sample("mpiexec", 2, straight, tmp_path / "s2", 4)
    images1, labels1 = sample("local", 1, straight, tmp_path / "s1", 7)
    assert images1.dtype == np.uint8 and images1.shape == (9, 16, 16, 1)
    assert labels1.dtype == np.int64 and labels1.min() >= 0 and labels1.max() < 10
    np.testing.assert_array_equal(images1, images2)
    np.testing.assert_array_equal(labels1, labels2)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(digits, tmp_path):
    run_dir = tmp_path / "run"
    # lr 1e30: the first step is finite, the second overflows.
    proc = helpers.launch("local", 1, "improved_diffusion.train", "--data_dir", digits(16), "--logdir", run_dir,
                          *TINY, "--lr", "1e30", "--max_steps", "5", "--save_interval", "1", flag_files=[FLAGS])
    assert proc.returncode == 2, helpers.describe(proc)
    last = helpers.error_lines(proc)[-1]
    assert "loss is not finite at step 2" in last and "last good checkpoint is step 1" in last, last
    assert sorted(p.name for p in run_dir.glob("state*.pt")) == ["state000001.pt"]
    assert not list(run_dir.glob("*000002.pt"))


def test_nll_writes_openai_term_files(trained_run, digits, tmp_path):
    out = tmp_path / "nll"
    proc = helpers.launch("local", 1, "improved_diffusion.nll", "--model_path", trained_run("id_cond"), "--logdir", out,
                          "--data_dir", digits(16, "test"), "--num_samples", "3", "--batch_size", "2")
    assert proc.returncode == 0, helpers.describe(proc)
    result = json.loads((out / "nll.json").read_text())
    assert result["num_samples"] == 3 and 0 < result["bpd"] < 50
    for name in ("vb", "mse", "xstart_mse"):
        with np.load(out / f"{name}_terms.npz") as f:
            assert f["arr_0"].shape == (50,)  # diffusion_steps read back from the run directory


@pytest.mark.parametrize("args,message", [
    ([], "--data_dir is required"),
    (["--data_dir", "DATA", "--precision", "fp8"], "--precision: 'fp8'"),
    (["--data_dir", "DATA", "--channel_mult", "1,x"], "--channel_mult '1,x'"),
    (["--data_dir", "DATA", "--resume_checkpoint", "/nonexistent/model000010.pt"], "/nonexistent/model000010.pt"),
])
def test_bad_input_is_one_line(digits, tmp_path, args, message):
    args = [str(digits(16)) if a == "DATA" else a for a in args]
    small = ["--image_size", "16", "--channel_mult", "1,2", "--num_channels", "32", "--num_res_blocks", "1"]
    proc = helpers.py("improved_diffusion.train", "--logdir", str(tmp_path / "run"), "--max_steps", "1", *small, *args,
                      timeout=300)
    assert proc.returncode == 2, helpers.describe(proc)
    lines = helpers.error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("improved_diffusion.train: error:") and message in lines[0], lines


def test_grayscale_trains_one_channel_and_samples_x1(digits, tmp_path):
    """--image_channels 1: the loader keeps grey, the UNet takes 1 channel and returns 2 (mean and
    variance, learn_sigma), samples are Nx16x16x1, and the converters, grids and FD-digits read them.
    (Its resume is bit for bit: tests/contract/test_task_contract.py trains a one-channel UNet.)"""
    straight = tmp_path / "straight"
    train("local", 1, digits(16), straight, "--image_channels", "1", "--save_interval", "4", "--max_steps", "4")
    weights = torch.load(straight / "model000004.pt", weights_only=True)
    assert weights["input_blocks.0.0.weight"].shape[1] == 1 and weights["out.2.weight"].shape[0] == 2
    proc = helpers.launch("local", 1, "improved_diffusion.sample", "--model_path", straight, "--logdir",
                          tmp_path / "s", "--num_samples", "3", "--timestep_respacing", "4")
    assert proc.returncode == 0, helpers.describe(proc)
    with np.load(tmp_path / "s" / "samples_3x16x16x1.npz") as f:
        assert f["arr_0"].shape == (3, 16, 16, 1) and f["arr_0"].dtype == np.uint8
    # the converters, grids and FD-digits read the one-channel file
    grid = helpers.py("evaluations.grid", tmp_path / "s" / "samples_3x16x16x1.npz", tmp_path / "g.png")
    assert grid.returncode == 0, helpers.describe(grid)
    fd = helpers.py("evaluations.digits_features", tmp_path / "s" / "samples_3x16x16x1.npz")
    assert fd.returncode == 0 and "FD-digits:" in fd.stdout, helpers.describe(fd)
