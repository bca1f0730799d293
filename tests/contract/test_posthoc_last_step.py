"""The post-hoc EMA is reconstructed at the run's last step, not at its last multiple of
--ema_snapshot_interval: every checkpoint step gets a snapshot too (trainkit.phema.snapshot_due
with checkpoint=True), as edm2 saves one when training is done. Without it a run of 10 steps with
snapshots every 4 was reconstructed at step 8, two steps stale."""

import pytest
import torch

import helpers
from trainkit import checkpoint, posthoc_ema


def _ended(proc, run_dir, tmp_path, steps):
    """The training exited 0 with snapshots of `steps` (its last step among them), and
    reconstructing a tracked σ_rel at the newest snapshot gives the profile's own average of the
    last checkpoint (least squares reproduces a tracked profile)."""
    assert proc.returncode == 0, helpers.describe(proc)
    assert posthoc_ema.snapshot_steps(str(run_dir)) == steps
    step = steps[-1]
    assert posthoc_ema.main([str(run_dir), "--sigma_rel", "0.05", "--out", str(tmp_path / "ph")]) == 0
    ck = checkpoint.resolve(str(tmp_path / "ph" / "sigma_rel_0.05"))
    assert ck.step == step
    rebuilt, tracked = ck.load(ck.state["sample_weights"]), checkpoint.resolve(str(run_dir)).load("phema_0.05_")
    for name, value in tracked.items():
        if value.is_floating_point():
            torch.testing.assert_close(rebuilt[name], value, rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_a_gans_run_has_a_snapshot_of_its_last_step(tmp_path, digits):
    run_dir = tmp_path / "run"
    proc = helpers.py("gans.train", "--model", "dcgan", "--data_dir", digits(8), "--image_size", "8",
                      "--num_channels", "1", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch_size", "16",
                      "--max_steps", "10", "--ema_std", "0.05,0.1", "--ema_snapshot_interval", "4",
                      "--grid_size", "4", "--logdir", run_dir)
    _ended(proc, run_dir, tmp_path, [4, 8, 10])


@pytest.mark.slow
def test_an_improved_diffusion_run_has_a_snapshot_of_its_last_step(tmp_path, digits):
    from _support.flags import ID_FLAGS as FLAGS
    from _support.flags import ID_TINY as TINY

    run_dir = tmp_path / "run"
    proc = helpers.launch("local", 1, "improved_diffusion.train", "--data_dir", digits(8), "--logdir", run_dir,
                          *TINY, "--max_steps", 5, "--save_interval", 0, "--ema_std", "0.05,0.1",
                          "--ema_snapshot_interval", 2, flag_files=[FLAGS])
    _ended(proc, run_dir, tmp_path, [2, 4, 5])


@pytest.mark.slow
def test_a_ddgan_run_has_a_snapshot_of_its_last_step(tmp_path, digits):
    from _support.flags import DDGAN_FLAGS, DDGAN_SMALL

    run_dir = tmp_path / "run"
    proc = helpers.launch("local", 1, "ddgan.train", "--data_dir", digits(16), "--batch_size", "4", *DDGAN_SMALL,
                          "--d_steps", "1", "--logdir", run_dir, "--max_steps", "3", "--ema_std", "0.05,0.1",
                          "--ema_snapshot_interval", "2", flag_files=[DDGAN_FLAGS])
    _ended(proc, run_dir, tmp_path, [2, 3])
