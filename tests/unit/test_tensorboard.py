"""--tensorboard (and tensorboard in $OPENAI_LOG_FORMAT): every family's logged scalars at their
steps, and gans' sample grid, in RUN_DIR/tb/, read back with TensorBoard's own reader; rank 0
alone writes; without the package, a one-line error and no run directory.

Tiny models trained in-process for 3 steps (a second or two each); one 2-rank run under mpiexec."""

import io
import math
import os
import sys

import numpy as np
import pytest
import torch

import helpers
from _support.entry import main_in_process
from trainkit import dist
from trainkit import logger as trainkit_logger
from trainkit.logger import Logger, read_progress

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

INSTALL = 'pip install -e ".[tensorboard]"'
GANS_TINY = ["--model", "dcgan", "--image_size", "16", "--num_channels", "1", "--nz", "4", "--ngf", "4",
             "--ndf", "4", "--batch_size", "8", "--log_interval", "1"]
DDGAN_TINY = ["--dataset", "digits", "--image_size", "8", "--num_channels", "1", "--num_channels_dae", "8",
              "--ch_mult", "1", "2", "--num_res_blocks", "1", "--attn_resolutions", "4", "--nz", "4",
              "--z_emb_dim", "8", "--t_emb_dim", "8", "--n_mlp", "1", "--ngf", "2", "--num_timesteps", "3",
              "--batch_size", "4", "--lazy_reg", "2", "--random_flip", "false", "--log_interval", "1"]
ID_TINY = ["--image_size", "8", "--image_channels", "1", "--num_channels", "32", "--num_res_blocks", "1",
           "--channel_mult", "1,2", "--attention_resolutions", "4", "--num_heads", "1", "--learn_sigma", "True",
           "--diffusion_steps", "10", "--noise_schedule", "cosine", "--batch_size", "4", "--log_interval", "1"]


def events(tb_dir):
    acc = EventAccumulator(str(tb_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def event_files(root):
    return sorted(p.relative_to(root) for p in root.rglob("events.out.tfevents.*"))


def assert_scalars_match_progress(run_dir):
    """Every column of progress.csv is a TensorBoard scalar holding exactly its (step, value) pairs."""
    rows = read_progress(run_dir)
    assert rows, "no rows in progress.csv"
    acc = events(run_dir / "tb")
    tags = set(acc.Tags()["scalars"])
    numeric = {k for r in rows for k, v in r.items() if isinstance(v, float)}
    assert numeric <= tags, sorted(numeric - tags)
    for key in numeric:
        expected = [(int(r["step"]), r[key]) for r in rows if key in r]
        got = [(s.step, s.value) for s in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in expected], key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-30), key
    return rows, acc


def train_in_process(module, argv, monkeypatch, capsys):
    code, err = main_in_process(module, argv, monkeypatch, capsys)
    assert code == 0, err
    return err


# --- every family, from the command line ----------------------------------------------------

def test_gans_dcgan_scalars_at_the_logged_steps(digits, tmp_path, monkeypatch, capsys):
    from gans import train

    run_dir = tmp_path / "run"
    train_in_process(train, ["--data_dir", digits(16), *GANS_TINY, "--max_steps", 3, "--save_interval", 2,
                             "--tensorboard", "--logdir", run_dir], monkeypatch, capsys)
    rows, acc = assert_scalars_match_progress(run_dir)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert [s.step for s in acc.Scalars(key)] == [1, 2, 3]
    assert event_files(run_dir) == [p for p in event_files(run_dir) if p.parts[0] == "tb"] and event_files(run_dir)


def test_gans_cli_logs_the_grid_image_at_each_checkpoint(digits, tmp_path, monkeypatch, capsys):
    from gans import train

    run_dir = tmp_path / "run"
    train_in_process(train, ["--data_dir", digits(16), *GANS_TINY, "--max_steps", 3, "--save_interval", 2,
                             "--tensorboard", "--logdir", run_dir], monkeypatch, capsys)
    images = events(run_dir / "tb").Images("samples")
    assert [i.step for i in images] == [2, 3]


def test_ddgan_scalars_at_the_logged_steps(digits, tmp_path, monkeypatch, capsys):
    from ddgan import train

    run_dir = tmp_path / "run"
    train_in_process(train, ["--data_dir", digits(16), *DDGAN_TINY, "--max_steps", 3, "--tensorboard",
                             "--logdir", run_dir], monkeypatch, capsys)
    rows, acc = assert_scalars_match_progress(run_dir)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert {"errD", "errG", "r1"} <= set(acc.Tags()["scalars"])  # the reference's names


@pytest.mark.parametrize("how", ["--tensorboard", "OPENAI_LOG_FORMAT"])
def test_improved_diffusion_scalars_at_the_logged_steps(how, digits, tmp_path, monkeypatch, capsys):
    from improved_diffusion import train

    run_dir = tmp_path / "run"
    argv = ["--data_dir", digits(16), *ID_TINY, "--max_steps", 3, "--logdir", run_dir]
    if how == "--tensorboard":
        argv.append("--tensorboard")
    else:  # openai's switch: scripts/image_train.py runs this same entry point
        monkeypatch.setenv("OPENAI_LOG_FORMAT", "stdout,log,csv,tensorboard")
    train_in_process(train, argv, monkeypatch, capsys)
    rows, acc = assert_scalars_match_progress(run_dir)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert {"loss", "mse", "vb"} <= set(acc.Tags()["scalars"])


def test_without_the_flag_no_event_files(digits, tmp_path, monkeypatch, capsys):
    from gans import train

    monkeypatch.delenv("OPENAI_LOG_FORMAT", raising=False)
    run_dir = tmp_path / "run"
    train_in_process(train, ["--data_dir", digits(16), *GANS_TINY, "--max_steps", 1, "--logdir", run_dir],
                     monkeypatch, capsys)
    assert (run_dir / "progress.csv").exists() and not (run_dir / "tb").exists()


@pytest.mark.slow
def test_two_ranks_only_rank_0_writes_events(digits, tmp_path):
    run_dir = tmp_path / "run"
    proc = helpers.launch("mpiexec", 2, "gans.train", "--data_dir", digits(16), *GANS_TINY, "--max_steps", 2,
                          "--tensorboard", "--logdir", run_dir, cwd=tmp_path)
    assert proc.returncode == 0, helpers.describe(proc)
    # one writer: a single event file, in RUN_DIR/tb/, and none anywhere else (no default runs/ folder)
    files = event_files(tmp_path)
    assert len(files) == 1 and files[0].parent == run_dir.relative_to(tmp_path) / "tb", files
    assert sorted(os.listdir(tmp_path)) == ["run"]
    rows, _ = assert_scalars_match_progress(run_dir)
    assert [int(r["step"]) for r in rows] == [1, 2] and rows[-1]["samples"] == 2 * 2 * 8


@pytest.mark.parametrize("how,message", [
    ("--tensorboard", f"--tensorboard needs the tensorboard package: {INSTALL}"),
    ("OPENAI_LOG_FORMAT", f"tensorboard in $OPENAI_LOG_FORMAT needs the tensorboard package: {INSTALL}"),
])
def test_without_the_package_one_line_and_no_run_directory(how, message, digits, tmp_path, monkeypatch, capsys):
    from gans import train

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what a missing package looks like to importlib
    run_dir = tmp_path / "run"
    argv = ["--data_dir", digits(16), *GANS_TINY, "--max_steps", 1, "--logdir", run_dir]
    if how == "--tensorboard":
        argv.append("--tensorboard")
    else:
        monkeypatch.setenv("OPENAI_LOG_FORMAT", "csv,tensorboard")
    code, err = main_in_process(train, argv, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines == [f"gans.train: error: {message}"], err
    assert not run_dir.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("module,factory", [
    ("gans.train", "create_argparser"), ("gans.sample", "create_argparser"),
    ("ddgan.train", "create_parser"), ("ddgan.sample", "create_parser"),
    ("improved_diffusion.train", "create_argparser"), ("improved_diffusion.sample", "create_argparser"),
])
def test_every_train_and_sample_entry_point_takes_the_flag(module, factory):
    import importlib

    parser = getattr(importlib.import_module(module), factory)()
    text = " ".join(parser.format_help().split())
    assert "--tensorboard" in text and "RUN_DIR/tb/" in text and INSTALL in text
    assert parser.get_default("tensorboard") is False


# --- trainkit.logger's tensorboard format -----------------------------------------------------

def test_logger_rows_scalars_at_the_step_key_else_the_row_number(tmp_path):
    log = Logger(str(tmp_path), stdout=False, tensorboard=True)
    log.logkv("loss", 0.5)
    log.logkv("note", "text has no curve")
    log.dumpkvs()  # no step key: row 1
    log.logkv("step", 10)
    log.logkv_mean("loss", 1.0)
    log.logkv_mean("loss", 2.0)
    log.logkv("flag", True)
    log.logkv("t", torch.tensor(0.25))
    log.logkv("n", np.float32(4.0))
    log.dumpkvs()
    log.logkv("loss", float("nan"))
    log.dumpkvs()  # no step key: row 3
    log.close()
    acc = events(tmp_path / "tb")
    assert sorted(acc.Tags()["scalars"]) == ["flag", "loss", "n", "step", "t"]
    loss = [(s.step, s.value) for s in acc.Scalars("loss")]
    assert loss[:2] == [(1, 0.5), (10, 1.5)] and loss[2][0] == 3 and math.isnan(loss[2][1])
    assert [(s.step, s.value) for s in acc.Scalars("t")] == [(10, 0.25)]
    assert [(s.step, s.value) for s in acc.Scalars("flag")] == [(10, 1.0)]


def test_log_image_hwc_chw_float_and_tensor(tmp_path):
    from PIL import Image

    log = Logger(str(tmp_path), stdout=False, tensorboard=True)
    hwc = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    log.log_image("hwc", hwc, 4)
    log.log_image("chw", torch.from_numpy(hwc).permute(2, 0, 1).contiguous(), 5)
    log.log_image("float", hwc.astype(np.float32) / 255, 6)
    log.log_image("grey", hwc[:, :, 0], 7)
    with pytest.raises(ValueError, match=r"shape \(2, 6, 10, 3\)"):
        log.log_image("batch", np.stack([hwc, hwc]), 8)
    log.close()
    acc = events(tmp_path / "tb")
    for tag, step in [("hwc", 4), ("chw", 5), ("float", 6)]:
        (event,) = acc.Images(tag)
        assert event.step == step and (event.width, event.height) == (10, 6)
        with Image.open(io.BytesIO(event.encoded_image_string)) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), hwc), tag
    (grey,) = acc.Images("grey")
    with Image.open(io.BytesIO(grey.encoded_image_string)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB"))[:, :, 1], hwc[:, :, 0])


def test_log_image_is_a_no_op_when_off_or_not_rank_0(tmp_path, monkeypatch):
    off = Logger(str(tmp_path / "off"), stdout=False)
    off.log_image("samples", np.zeros((4, 4, 3), np.uint8), 1)
    off.close()
    monkeypatch.setattr(dist, "is_main", lambda: False)
    other = Logger(str(tmp_path / "rank1"), stdout=False, tensorboard=True)
    other.log_image("samples", np.zeros((4, 4, 3), np.uint8), 1)
    other.logkv("loss", 1.0)
    other.dumpkvs()
    other.close()
    assert not (tmp_path / "off" / "tb").exists() and not (tmp_path / "rank1").exists()


def test_logger_without_the_package_is_one_line(tmp_path, monkeypatch):
    from trainkit.errors import UserError

    monkeypatch.setattr(trainkit_logger, "tensorboard_installed", lambda: False)
    with pytest.raises(UserError) as e:
        Logger(str(tmp_path / "run"), tensorboard=True)
    assert str(e.value) == f"the tensorboard log format needs the tensorboard package: {INSTALL}"
    assert not (tmp_path / "run").exists()


def test_a_remote_run_directory_gets_the_event_files(tmp_path, monkeypatch):
    """A blobfile URL: events are written in the local staging folder and copied up with each row."""
    monkeypatch.setattr(trainkit_logger, "is_local", lambda path: False)
    log = Logger(str(tmp_path), stdout=False, tensorboard=True)
    log.logkv("step", 1)
    log.logkv("loss", 2.0)
    log.dumpkvs()
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1  # there before close
    log.log_image("samples", np.zeros((4, 4, 3), np.uint8), 1)
    log.close()
    acc = events(tmp_path / "tb")
    assert [(s.step, s.value) for s in acc.Scalars("loss")] == [(1, 2.0)] and len(acc.Images("samples")) == 1


def test_openai_logger_tensorboard_uses_the_step_key(tmp_path):
    helpers.log_two_openai_rows(tmp_path, ["csv", "tensorboard"])
    acc = events(tmp_path / "tb")
    assert [(s.step, s.value) for s in acc.Scalars("loss")] == [(1, 0.5), (7, 0.25)]


def test_gans_trainer_logs_the_grid_it_writes(tmp_path):
    from PIL import Image

    from gans import models
    from gans.trainer import GANTrainer

    G, D = models.create_models("dcgan", 16, 4, 4, 4, 1, 0, False)
    log = Logger(str(tmp_path), stdout=False, tensorboard=True)
    z = torch.randn(4, 4, 1, 1)
    trainer = GANTrainer(G, D, device="cpu", grid_inputs=(z, None), logger=log)
    trainer.artefacts(str(tmp_path), 5)
    log.close()
    (event,) = events(tmp_path / "tb").Images("samples")
    with Image.open(tmp_path / "grid000005.png") as png, Image.open(io.BytesIO(event.encoded_image_string)) as tb:
        assert event.step == 5 and np.array_equal(np.asarray(png.convert("RGB")), np.asarray(tb.convert("RGB")))
