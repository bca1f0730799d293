"""ddgan.train / ddgan.sample from the command line: 2 ranks under mpiexec and torchrun on the
digits (one run per launcher; a resume's bits are tests/contract/test_task_contract.py's and, under the
launchers, tests/e2e/test_trainkit_dist.py's), npz independent of the rank count, one-line refusals."""

import csv
import math
import re
import shutil
import sys

import numpy as np
import pytest
import torch

import helpers
from _support.checks import ok
from _support.entry import main_in_process
from _support.flags import DDGAN_FLAGS as FLAGS
from _support.flags import DDGAN_SMALL as SMALL
from _support.flags import DDGAN_SMALL_MODEL as SMALL_MODEL


def rows(run_dir):
    with open(run_dir / "progress.csv") as f:
        return list(csv.DictReader(f))


def step_files(run_dir, step):
    return sorted(p.name for p in run_dir.glob(f"*{step:06d}.pt"))


def one_line_error(proc, *fragments):
    assert proc.returncode == 2, helpers.describe(proc)
    lines = helpers.error_lines(proc)
    assert len(lines) >= 1 and ": error: " in lines[-1], helpers.describe(proc)
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_two_ranks_train_and_sample(launcher, digits, tmp_path):
    data = str(digits(16))
    common = ["--data_dir", data, "--batch_size", "8", "--grad_accum", "2", *SMALL]
    a, s = tmp_path / "a", tmp_path / "s"
    ok(helpers.launch(launcher, 2, "ddgan.train", *common, "--logdir", a, "--max_steps", "4",
                      "--save_interval", "2", flag_files=[FLAGS]))
    assert step_files(a, 2) == ["disc000002.pt", "disc_opt000002.pt", "ema_0.99_000002.pt", "model000002.pt",
                                "opt000002.pt", "state000002.pt"]
    losses = rows(a)
    assert [int(float(r["step"])) for r in losses] == [1, 2, 3, 4]
    for r in losses:
        for key in ("errD", "errG", "errD_real", "errD_fake", "grad_norm", "grad_norm_d"):
            assert math.isfinite(float(r[key])), r

    ok(helpers.launch(launcher, 2, "ddgan.sample", "--model_path", a, "--num_samples", "6",
                      "--batch_size", "2", "--logdir", s, "--seed", "7"))
    two = np.load(s / "samples_6x16x16x1.npz")["arr_0"]
    assert two.shape == (6, 16, 16, 1) and two.dtype == np.uint8
    if launcher == "mpiexec":
        # one process, another batch size, the EMA weights saved the way the released netG_*.pth
        # files are (DDP's `module.` prefix, free-form name, no options.json: model flags given)
        released = tmp_path / "released"
        released.mkdir()
        sd = torch.load(a / "ema_0.99_000004.pt", weights_only=True)
        torch.save({"module." + k: v for k, v in sd.items()}, released / "netG_4.pth")
        ok(helpers.launch("local", 1, "ddgan.sample", "--model_path", released / "netG_4.pth",
                          *SMALL_MODEL, "--num_samples", "6", "--batch_size", "4",
                          "--logdir", tmp_path / "s1", "--seed", "7", flag_files=[FLAGS]))
        one = np.load(tmp_path / "s1" / "samples_6x16x16x1.npz")["arr_0"]
        assert np.array_equal(one, two)


@pytest.mark.parametrize("module,argv,message", [
    ("ddgan.train", ["--batch_size", "16", "--grad_accum", "3"],
     "ddgan.train: error: --grad_accum 3 does not divide --batch_size 16"),
    ("ddgan.train", ["--num_timesteps", "0"], "ddgan.train: error: --num_timesteps: 0 must be a positive"),
    ("ddgan.train", ["--lazy_reg", "0"], "error: argument --lazy_reg: 0 is out of range: must be >= 1"),
    ("ddgan.train", ["--ch_mult", "1", "2", "--fir_kernel", "1,x"], "is not an integer"),
    ("ddgan.sample", ["--model_path", "NOWHERE"], "no such checkpoint file or run directory"),
])
def test_refusals_are_one_line(module, argv, message, monkeypatch, capsys, tmp_path):
    if module == "ddgan.train":
        argv = ["--data_dir", tmp_path, "--ch_mult", "1", "2", "--image_size", "16",
                "--logdir", tmp_path / "x"] + argv
    else:
        argv = [str(a).replace("NOWHERE", str(tmp_path / "nothing")) for a in argv]
    code, err = main_in_process(module, argv, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "x").exists()  # nothing written


def test_checkpoint_of_another_ch_mult_names_the_keys(digits, copy_run, tmp_path):
    data = str(digits(16))
    env = helpers.test_env()
    run = copy_run("ddgan_small", tmp_path / "run")  # conftest.RUN_RECIPES: SMALL, 2 steps
    line = one_line_error(
        helpers.py("ddgan.sample", "--model_path", run, "--ch_mult", "1", "2", "2",
                   "--num_samples", "2", "--logdir", tmp_path / "s", env=env),
        "ema_0.99_000002.pt: generator weights do not fit", "missing: all_modules.")
    assert "--ch_mult" in line
    # resuming training with another --ch_mult is refused the same way
    one_line_error(
        helpers.launch("local", 1, "ddgan.train", "--data_dir", data, "--batch_size", "4", *SMALL,
                       "--logdir", tmp_path / "r2", "--resume", run, "--ch_mult", "1", "1",
                       flag_files=[FLAGS]),
        "model000002.pt: generator weights do not fit", "shape (checkpoint vs flags): ")
    # a new run into a directory with checkpoints must say --resume, and leave it untouched
    options_before = (run / "options.json").read_bytes()
    one_line_error(
        helpers.launch("local", 1, "ddgan.train", "--data_dir", data, "--batch_size", "4", *SMALL,
                       "--logdir", run, "--max_steps", "1", flag_files=[FLAGS]),
        "already holds checkpoints")
    assert (run / "options.json").read_bytes() == options_before


def test_export_writes_the_original_netG_layout(tmp_path, monkeypatch, capsys):
    """A run's EMA generator as netG_<epoch>.pth: `module.`-prefixed keys, as test_ddgan.py expects
    (it drops 7 characters from every key), loadable back into our generator."""
    from ddgan import script_util
    from ddgan.ncsnpp import GeneratorConfig, NCSNpp
    from trainkit import checkpoint

    cfg = GeneratorConfig(image_size=8, num_channels=1, num_channels_dae=8, ch_mult=(1, 2),
                          num_res_blocks=1, attn_resolutions=(4,), nz=4, z_emb_dim=8, n_mlp=1)
    g = NCSNpp(cfg)
    # the state file records the sampling weights, as every ddgan.train step does with --use_ema
    checkpoint.save(str(tmp_path), 3, {"model": g.state_dict(), "ema_0.99_": g.state_dict()},
                    {"rng": [], "sample_weights": "ema_0.99_"})
    out = tmp_path / "saved_info" / "netG_3.pth"
    from ddgan import export
    monkeypatch.setattr(sys, "argv", ["ddgan.export", "--model_path", str(tmp_path), "--out", str(out)])
    export.main()
    assert "ema_0.99_000003.pt" in capsys.readouterr().out
    sd = torch.load(out, weights_only=True)
    assert all(k.startswith("module.") for k in sd)
    assert {k[7:] for k in sd} == set(g.state_dict())
    script_util.load_weights(NCSNpp(cfg), sd, str(out))


def test_sample_computes_fid_against_statistics(digits, trained_run, tmp_path):
    """--fid_stats: FID of the written npz through evaluations (offline, random Inception weights),
    equal to evaluations.fid on the same files; a bad statistics file fails before sampling."""
    from evaluations import fid, inception

    weights = inception.make_random_weights(str(tmp_path / "inception.pth"), seed=0, calibration_batches=1,
                                            batch_size=2)
    stats = tmp_path / "stats.npz"
    few = tmp_path / "few"  # a dozen reference images keep the 299 px Inception passes short
    few.mkdir()
    for image in sorted(digits(16).iterdir())[:12]:
        shutil.copy(image, few / image.name)
    fid.save_statistics(str(few), str(stats), dims=64, weights=weights)
    run = trained_run("ddgan_small")  # conftest.RUN_RECIPES: SMALL, 2 steps
    out = tmp_path / "samples"
    proc = helpers.launch("local", 1, "ddgan.sample", "--model_path", run, "--num_samples", "6", "--batch_size", "3",
                          "--logdir", out, "--fid_stats", stats, "--inception_weights", weights, *SMALL_MODEL,
                          flag_files=[FLAGS])
    ok(proc)
    reported = float(re.search(r"^FID: (\S+) against", proc.stdout, re.M)[1])
    direct = fid.fid_of_paths(str(out / "samples_6x16x16x1.npz"), str(stats), dims=64, weights=weights)
    assert reported == pytest.approx(direct, rel=1e-6) and reported > 0
    junk = tmp_path / "junk.npz"
    np.savez(junk, arr_0=np.zeros((1, 2, 2, 3), np.uint8))
    bad = helpers.launch("local", 1, "ddgan.sample", "--model_path", run, "--logdir", tmp_path / "s2",
                         "--fid_stats", junk, *SMALL_MODEL, flag_files=[FLAGS])
    assert bad.returncode == 2 and "junk.npz: not FID statistics" in bad.stderr
    assert not (tmp_path / "s2").exists()
