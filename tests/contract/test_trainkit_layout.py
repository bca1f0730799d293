"""trainkit's shape after the split (issue 38): what a Task declares reaches the run's
options.json (C6) and no options file the run did not write is rewritten; the one progress.csv
reader (C7); flag files read from Python through trainkit.flagfile (C7)."""

import argparse
import json
import os

import pytest
import torch

from _support.tasks import Scalar
from trainkit import data, flagfile, logger, loop, loopflags, progress_file, run
from trainkit.errors import UserError


class Declaring(Scalar):
    loss_keys = ("loss", "loss_g")
    discriminator_keys = ("errD",)


def _batches():
    return data.Batches(data.ImageData(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), None, "fake"), 4)


def _setup(run_dir, resume=""):
    return run.setup("test", argparse.Namespace(logdir=str(run_dir), seed=3), resume=resume, stdout=False)


# --- C6: the Task's declarations in options.json --------------------------------------------

def test_the_task_declares_no_keys_by_default():
    assert loop.Task.loss_keys == () and loop.Task.discriminator_keys == ()


def test_the_loop_writes_the_declared_keys_into_the_runs_options(tmp_path):
    loop.Loop(_setup(tmp_path), Declaring(), _batches(), total_steps=2).run_loop()
    with open(tmp_path / "options.json") as f:
        record = json.load(f)
    assert record["loss_keys"] == ["loss", "loss_g"] and record["discriminator_keys"] == ["errD"]
    assert record["seed"] == 3 and record["_run"]["role"] == "train"  # the rest of setup's record stays
    # declarations, not flags: a sampler reading the run's flags back does not get them
    assert run.load_options(str(tmp_path)) == {"logdir": str(tmp_path), "seed": 3}


def test_a_resumed_run_records_the_keys_again(tmp_path):
    loop.Loop(_setup(tmp_path), Scalar(), _batches(), total_steps=2).run_loop()
    with open(tmp_path / "options.json") as f:
        assert json.load(f)["loss_keys"] == []
    loop.Loop(_setup(tmp_path, resume="auto"), Declaring(), _batches(), total_steps=4).run_loop()
    with open(tmp_path / "options.json") as f:
        assert json.load(f)["loss_keys"] == ["loss", "loss_g"]


def test_an_options_file_this_run_did_not_write_is_not_rewritten(tmp_path):
    mine = b'{"lr": 0.1,   "note": "the user\'s own file, kept byte for byte"}\n'
    (tmp_path / "options.json").write_bytes(mine)
    handmade = run.Run(str(tmp_path), logger.Logger(str(tmp_path), stdout=False), {"lr": 0.1})
    assert loop.Loop(handmade, Declaring(), _batches(), total_steps=2).run_loop() == 2
    assert (tmp_path / "options.json").read_bytes() == mine
    assert not run.record_options(handmade, loss_keys=["x"])


# --- C7: one progress.csv reader -------------------------------------------------------------

def test_read_progress_is_the_loggers_rows_back(tmp_path):
    lg = logger.Logger(str(tmp_path), stdout=False)
    lg.logkv("step", 1)
    lg.logkv("phase", "warmup")
    lg.dumpkvs()
    lg.logkv("step", 2)
    lg.logkv("loss", 0.5)  # a column that appears later: the first row has a blank there
    lg.dumpkvs()
    lg.close()
    rows = progress_file.read_progress(str(tmp_path))
    assert rows == [{"step": 1.0, "phase": "warmup"}, {"step": 2.0, "loss": 0.5}]
    assert logger.read_progress(str(tmp_path / "progress.csv")) == rows  # the same reader, re-exported


def test_latest_progress_skips_a_half_written_line_and_a_rewrite(tmp_path):
    path = tmp_path / "progress.csv"
    assert progress_file.latest_progress(str(tmp_path)) is None  # no file yet
    path.write_text("step,loss\n")
    assert progress_file.latest_progress(str(tmp_path)) is None  # a header, no row
    path.write_text("step,loss\n1,0.5\n2,0.25\n3,0.1")  # the training is writing step 3's line
    assert progress_file.latest_progress(str(path)) == {"step": 2.0, "loss": 0.25}
    path.write_text("img_per_sec,loss,step\n1,0.5\n")  # rewritten for a new column: old row, short
    assert progress_file.latest_progress(str(path)) is None
    path.write_text("img_per_sec,loss,step\n,0.5,1\n" + "9,0.1,2\n" * 5000)
    assert progress_file.latest_progress(str(path), tail_bytes=100) == {"img_per_sec": 9.0, "loss": 0.1, "step": 2.0}


# --- C7: flag files --------------------------------------------------------------------------

def test_flag_file_argv_is_what_run_sh_passes(tmp_path):
    flags = tmp_path / "f.sh"
    flags.write_text('SIZE=16\nMODEL_FLAGS="--image_size $SIZE --note \'two words\'"\n'
                     'TRAIN_FLAGS="--lr 1e-4"\nSAMPLE_FLAGS="--num_samples 8"\n')
    assert flagfile.flag_file_argv(str(flags)) == ["--image_size", "16", "--note", "two words", "--lr", "1e-4"]
    assert flagfile.flag_file_argv(str(flags), "SAMPLE")[-2:] == ["--num_samples", "8"]
    assert flagfile.flag_file_argv(str(flags), "EDIT") == ["--image_size", "16", "--note", "two words"]
    assert flagfile.read_vars(str(flags), ["SIZE", "UNSET"]) == {"SIZE": "16", "UNSET": ""}


def test_a_flag_file_that_fails_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text("echo chatter\nreturn 4\n")  # what it prints is not taken for values; its status counts
    with pytest.raises(UserError) as e:
        flagfile.read_vars(str(bad), ["MODEL_FLAGS"], what="config")
    assert str(e.value).startswith(f"{bad}: the config failed to load in bash") and "\n" not in str(e.value)
    with pytest.raises(UserError, match=f"^{tmp_path / 'missing.sh'}: the flag file failed"):
        flagfile.flag_file_argv(str(tmp_path / "missing.sh"))
    assert os.listdir(tmp_path) == ["bad.sh"]


# --- C6: the loop's flags, declared once -----------------------------------------------------

def test_the_loop_flags_have_one_type_and_default_and_take_a_reference_alias(capsys):
    p = run.ArgumentParser(prog="fam")
    loopflags.add_args(p, aliases={"resume_checkpoint": ("--resume",)})
    defaults = vars(p.parse_args([]))
    assert defaults == {name: default for name, (_, default, _) in {**loopflags.LOOP_FLAGS,
                                                                  **loopflags.PROBE_FLAGS}.items()}
    got = p.parse_args(["--resume", "--ema_rate", "0.9,0.999", "--save_interval", "0", "--precision", "bf16"])
    assert (got.resume_checkpoint, got.ema_rate, got.save_interval, got.precision) == ("auto", "0.9,0.999", 0, "bf16")
    for argv, flag in ((["--ema_rate", "1.5"], "--ema_rate"), (["--log_interval", "0"], "--log_interval"),
                       (["--precision", "fp8"], "--precision"), (["--max_steps", "-1"], "--max_steps")):
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"fam: error: argument {flag}") and err.count("\n") == 1
    q = run.ArgumentParser(prog="fam")
    loopflags.add_args(q, skip=("precision",), probe=False)
    assert "precision" not in vars(q.parse_args([])) and "probe_points" not in vars(q.parse_args([]))


# --- issue item 5: what a load decoded is the data set's, not a module global ---------------

def test_the_decode_record_is_on_the_loaded_data(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"a_{i}.png")
    d = data.load_dataset(str(tmp_path), 4)
    assert {k: d.decode[k] for k in ("path", "images", "decoded", "decoders", "reused")} == {
        "path": None, "images": 3, "decoded": 3, "decoders": 1, "reused": False}
    assert not hasattr(data, "last_decode")
