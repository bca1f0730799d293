"""Command-line behaviour: bad input gives one line naming it and exit 2, leaving nothing behind;
interpolate writes its grid. A few real processes; the rest calls the entry points in-process
(the same `run.main` wrapper, much faster than starting Python and torch again)."""


import pytest
import torch
from PIL import Image

import helpers
from _support.entry import main_in_process
from gans import interpolate, sample, train
from trainkit import checkpoint
from trainkit.logger import read_progress as run_logger_rows


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, helpers.describe(proc)
    lines = [line for line in helpers.error_lines(proc) if not line.startswith("+ ")]  # run.sh echoes its command
    assert len(lines) == 1, helpers.describe(proc)
    for f in fragments:
        assert f in lines[0], helpers.describe(proc)
    return lines[0]


def test_train_image_size_it_cannot_make(tmp_path, digits):
    logdir = tmp_path / "run"
    proc = helpers.py("gans.train", "--data_dir", digits(16), "--image_size", 28, "--logdir", logdir)
    line = _one_line_error(proc, "gans.train: error: --image_size 28", "use --image_size 32")
    assert not logdir.exists(), line  # rejected before the run directory is made


def test_train_resume_from_the_other_model_kind(tmp_path, digits, cdcgan_run):
    logdir = tmp_path / "run"
    proc = helpers.launch("local", 1, "gans.train", "--model", "dcgan", "--data_dir", digits(16), "--image_size", 16,
                          "--num_channels", 1, "--nz", 8, "--ngf", 8, "--ndf", 8, "--logdir", logdir,
                          "--resume_checkpoint", cdcgan_run)
    _one_line_error(proc, "model000002.pt: checkpoint holds a cdcgan generator, but --model is dcgan")
    assert not logdir.exists()


@pytest.mark.parametrize("argv,message", [
    (("--class_label", 10), "--class_label 10: outside the model's classes 0..9"),
    (("--class_label", -2), "--class_label -2: outside the model's classes 0..9"),
    (("--model", "dcgan"), "checkpoint holds a cdcgan generator, but --model is dcgan"),
    (("--image_size", 32), "the generator was trained with --image_size 16, but --image_size is 32"),
    (("--num_samples", 0), "--num_samples 0"),
])
def test_sample_bad_input(argv, message, cdcgan_run, tmp_path, monkeypatch, capsys):
    code, err = main_in_process(sample, ["--model_path", cdcgan_run, "--logdir", tmp_path / "s", *argv],
                                monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "s").exists()


def test_sample_refuses_a_file_that_is_no_dcgan_generator(tmp_path, monkeypatch, capsys):
    unet = tmp_path / "model000010.pt"
    torch.save({"input_blocks.0.0.weight": torch.zeros(2, 3, 3, 3)}, unet)
    code, err = main_in_process(sample, ["--model_path", unet, "--logdir", tmp_path / "s"], monkeypatch, capsys)
    assert code == 2 and "model000010.pt: not a DCGAN generator" in err and len(err.strip().splitlines()) == 1


def test_train_bad_flags_in_process(tmp_path, digits, monkeypatch, capsys):
    for argv, message in [
        (("--image_size", 48), "--image_size 48: DCGAN makes powers of two"),
        (("--grad_accum", 0), "--grad_accum 0: must be at least 1"),
        (("--data_dir", tmp_path / "nowhere"), "nowhere: no such data directory"),
        (("--model", "wgan"), "argument --model: invalid choice"),
    ]:
        code, err = main_in_process(train, ["--data_dir", digits(16), "--image_size", 16, "--logdir", tmp_path / "r",
                                            *argv], monkeypatch, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_interpolate_grid_and_bad_seeds(cdcgan_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "grid.png"
    code, err = main_in_process(interpolate, ["--model_path", cdcgan_run, "--seeds", "3,4,5", "--num_steps", 5,
                                              "--method", "both", "--class_label", 7, "--out", out, "--logdir",
                                              tmp_path / "i"], monkeypatch, capsys)
    assert code == 0, err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (5 * 18 + 2, 4 * 18 + 2)  # 2 pairs x (lerp, slerp) rows
    for argv, message in [(("--seeds", "5"), "need at least two seeds"), (("--seeds", "a,b"), "comma list"),
                          (("--class_label", 10), "--class_label 10: outside")]:
        code, err = main_in_process(interpolate, ["--model_path", cdcgan_run, "--logdir", tmp_path / "j", *argv],
                                    monkeypatch, capsys)
        assert code == 2 and message in err, err


def test_interpolation_rows_start_and_end_at_the_seed_latents():
    z = interpolate.interpolation_latents([3, 9], nz=6, num_steps=4, methods=["lerp", "slerp"])
    assert z.shape == (8, 6, 1, 1)
    from gans.script_util import seed_latent
    za, zb = seed_latent(3, 6), seed_latent(9, 6)
    for row in (z[:4], z[4:]):
        assert torch.allclose(row[0], za, atol=1e-6) and torch.allclose(row[-1], zb, atol=1e-6)
    assert not torch.allclose(z[1], z[5])  # lerp and slerp differ inside the segment


def test_sigterm_checkpoints_the_current_step_and_exits_0(tmp_path, digits, monkeypatch, capsys):
    """The stop contract: the step the vote stops at (at or after the signal) is checkpointed,
    with its grid, and the partial log row up to it is written; exit 0."""
    import os
    import re
    import signal

    from gans import trainer as trainer_module

    calls = {"n": 0}
    real_update = trainer_module.GANTrainer.update

    def update_then_signal(self, micro_batches):
        out = real_update(self, micro_batches)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler's preemption sends
        return out

    monkeypatch.setattr(trainer_module.GANTrainer, "update", update_then_signal)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        code, err = main_in_process(train, ["--model", "dcgan", "--data_dir", digits(16), "--image_size", 16,
                                            "--num_channels", 1, "--nz", 4, "--ngf", 4, "--ndf", 4, "--batch_size", 8,
                                            "--max_steps", 1000, "--save_interval", 1000, "--logdir", tmp_path / "r"],
                                    monkeypatch, capsys)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    assert code == 0, err
    log = (tmp_path / "r" / "log.txt").read_text()
    stopped = re.search(r"stopped at step (\d+) by a signal or \$TRAINKIT_DEADLINE", log)
    assert stopped, log[-2000:]
    step = int(stopped[1])
    assert 3 <= step == calls["n"] < 1000
    assert checkpoint.latest(str(tmp_path / "r")).step == step
    assert (tmp_path / "r" / f"grid{step:06d}.png").exists()
    # the last, partial log row (step < --log_interval) is written, not dropped
    rows = run_logger_rows(tmp_path / "r")
    assert rows and rows[-1]["step"] == step
