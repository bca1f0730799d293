"""DDGAN's own command lines, unchanged but for tiny model sizes: the DDGAN README's CIFAR-10
training line with --num_process_per_node 2 (two real ranks, started by ddgan.train itself through
torch's elastic launcher), its experiment folder, --exp --resume, and seed 003's test_ddgan.py
line with --exp / --epoch_id / --compute_fid --real_img_dir against an image folder, a
pytorch-fid .npz and DDGAN's .npy statistics."""

import argparse
import json
import os
import re
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

import helpers
from _support.checks import ok
from _support.entry import main_in_process

# The DDGAN README's CIFAR-10 command (train_ddgan.py -> python -m ddgan.train), 2 ranks
README_TRAIN = ("--dataset cifar10 --exp ddgan_cifar10_exp1 --num_channels 3 --num_channels_dae 128 "
                "--num_timesteps 4 --num_res_blocks 2 --batch_size 64 --num_epoch 1800 --ngf 64 --nz 100 "
                "--z_emb_dim 256 --n_mlp 4 --ch_mult 1 2 2 2 --lr_d 1.25e-4 --lr_g 1.6e-4 --lazy_reg 15 "
                "--num_process_per_node 2 --save_content")
# seed 003's train_ddgan.py line (one process, EMA)
SEED003_TRAIN = ("--dataset cifar10 --exp ddgan_cifar10_exp1 --num_channels 3 --num_channels_dae 128 --num_timesteps 4 "
                 "--num_res_blocks 2 --batch_size 128 --num_epoch 50 --ngf 64 --nz 100 --z_emb_dim 256 --n_mlp 4 "
                 "--embedding_type positional --use_ema --ema_decay 0.9999 --r1_gamma 0.02 --lr_d 1.25e-4 "
                 "--lr_g 1.6e-4 --lazy_reg 15 --num_process_per_node 1 --ch_mult 1 2 2 2 --save_content")
# seed 003's test_ddgan.py line (the FID reference is each test's own)
SEED003_SAMPLE = ("--dataset cifar10 --exp ddgan_cifar10_exp1 --num_channels 3 --num_channels_dae 128 "
                  "--num_timesteps 4 --num_res_blocks 2 --nz 100 --z_emb_dim 256 --n_mlp 4 --ch_mult 1 2 2 2 "
                  "--epoch_id 0 --compute_fid")
# what makes them tiny (argparse: the last value wins)
TINY_MODEL = ("--num_channels_dae 8 --ngf 4 --nz 8 --z_emb_dim 16 --t_emb_dim 16 --n_mlp 1 --ch_mult 1 2 "
              "--num_res_blocks 1 --attn_resolutions 16")
TINY_TRAIN = "--batch_size 4 --num_epoch 1 --log_interval 1"
EXP = os.path.join("saved_info", "dd_gan", "cifar10", "ddgan_cifar10_exp1")
REFERENCE_CONTENT_KEYS = {"epoch", "global_step", "args", "netG_dict", "optimizerG", "schedulerG", "netD_dict",
                          "optimizerD", "schedulerD"}


def words(*lines):
    return [w for line in lines for w in shlex.split(line)]


def train(cwd, *extra):
    return helpers.py("ddgan.train", *words(README_TRAIN, TINY_MODEL, TINY_TRAIN), "--data_dir", cwd / "cifar",
                      *extra, cwd=cwd)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """16 random 32 px RGB images; the README line trained on them (2 ranks x 4 images: 2 steps an
    epoch, epochs 0 and 1), then continued with --resume to epoch 2."""
    cwd = tmp_path_factory.mktemp("ddgan_cwd")
    (cwd / "cifar").mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(cwd / "cifar" / f"{i:02d}.png")
    first = ok(train(cwd, "--tensorboard"))
    files_after_first = sorted(os.listdir(cwd / EXP))
    resumed = ok(train(cwd, "--resume", "--num_epoch", "2"))
    return argparse.Namespace(cwd=cwd, dir=cwd / EXP, first=first, resumed=resumed, files_after_first=files_after_first)


@pytest.mark.slow
def test_readme_line_runs_two_ranks_and_writes_the_reference_folder(experiment):
    d = experiment.dir
    record = json.loads((d / "options.json").read_text())["_run"]
    assert record["world_size"] == 2 and record["launcher"] == "torchrun"  # our ranks are elastic workers
    first = experiment.files_after_first
    for name in ("netG_0.pth", "content.pth", "xpos_epoch_0.png", "sample_discrete_epoch_0.png",
                 "sample_discrete_epoch_1.png", "options.json", "progress.csv", "state000004.pt"):
        assert name in first, first
    assert "netG_1.pth" not in first  # --save_ckpt_every 25: epoch 0 only, as the reference
    assert Image.open(d / "sample_discrete_epoch_0.png").size == (2 + 2 * 34, 2 + 2 * 34)  # 4 images, 2x2 grid
    content = torch.load(d / "content.pth", weights_only=False)
    assert set(content) == REFERENCE_CONTENT_KEYS
    assert content["epoch"] == 1 and content["global_step"] == 2  # written after epoch 0 (2 steps)
    assert all(k.startswith("module.") for k in content["netG_dict"])
    assert content["schedulerG"]["T_max"] == 1 and content["schedulerG"]["last_epoch"] == 1


@pytest.mark.slow
def test_tensorboard_holds_the_per_epoch_sample_grids(experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(experiment.dir / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("sample_discrete")] == [2, 4]  # the last step of epochs 0 and 1
    assert [e.step for e in acc.Scalars("errD")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_netG_loads_strictly_as_test_ddgan_does(experiment):
    from ddgan import script_util
    from trainkit import run

    o = run.load_options(str(experiment.dir))
    ckpt = torch.load(experiment.dir / "netG_0.pth", map_location="cpu")
    assert all(k.startswith("module.") for k in ckpt)
    for key in list(ckpt):  # test_ddgan.py's own loop
        ckpt[key[7:]] = ckpt.pop(key)
    generator = script_util.build_generator(o)
    generator.load_state_dict(ckpt, strict=True)
    # --use_ema is off: netG_0 holds the generator as it was at the end of epoch 0 (step 2)
    step2 = torch.load(experiment.dir / "model000002.pt", map_location="cpu")
    assert all(torch.equal(step2[k], v) for k, v in ckpt.items())


@pytest.mark.slow
def test_resume_continues_the_experiment(experiment):
    out = experiment.resumed.stdout
    assert re.search(r"resuming from \S*ddgan_cifar10_exp1 step 4", out), out[-2000:]
    names = os.listdir(experiment.dir)
    assert "sample_discrete_epoch_2.png" in names and "state000006.pt" in names
    again = train(experiment.cwd)  # a fresh start into it is refused, nothing rewritten
    assert again.returncode != 0 and "already holds checkpoints" in again.stderr, helpers.describe(again)


@pytest.mark.slow
def test_seed003_training_line_saves_the_ema_generator(experiment, tmp_path):
    """One process (--num_process_per_node 1), --use_ema: netG_0.pth holds the EMA weights of the
    end of epoch 0, as train_ddgan.py swaps them in to save."""
    proc = ok(helpers.py("ddgan.train", *words(SEED003_TRAIN, TINY_MODEL), "--batch_size", 8, "--num_epoch", 1,
                         "--data_dir", experiment.cwd / "cifar", cwd=tmp_path))
    d = tmp_path / EXP
    assert json.loads((d / "options.json").read_text())["_run"]["world_size"] == 1, proc.stdout[-1000:]
    net_g = torch.load(d / "netG_0.pth", map_location="cpu")
    ema = torch.load(d / "ema_0.9999_000002.pt", map_location="cpu")
    raw = torch.load(d / "model000002.pt", map_location="cpu")
    assert all(torch.equal(ema[k[7:]], v) for k, v in net_g.items())
    assert not all(torch.equal(raw[k[7:]], v) for k, v in net_g.items())  # EMA, not the raw weights
    assert torch.load(d / "content.pth", weights_only=False)["epoch"] == 1


def test_a_folder_of_the_reference_code_is_never_written(tmp_path):
    exp = tmp_path / EXP
    exp.mkdir(parents=True)
    (exp / "netG_25.pth").write_bytes(b"theirs")
    proc = helpers.py("ddgan.train", *words(README_TRAIN), "--data_dir", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2, helpers.describe(proc)
    assert "netG_25.pth but no checkpoint of this project" in helpers.error_lines(proc)[-1]
    assert sorted(os.listdir(exp)) == ["netG_25.pth"] and (exp / "netG_25.pth").read_bytes() == b"theirs"


@pytest.fixture(scope="module")
def references(experiment):
    """An image folder, its pytorch-fid statistics npz and the same statistics as DDGAN's .npy, with
    random Inception weights (offline)."""
    from evaluations import fid, inception

    root = experiment.cwd / "refs"
    root.mkdir()
    weights = inception.make_random_weights(str(root / "inception.pth"), seed=0, calibration_batches=1, batch_size=2)
    folder = root / "real"
    folder.mkdir()
    for i, name in enumerate(sorted(os.listdir(experiment.cwd / "cifar"))[:6]):
        os.link(experiment.cwd / "cifar" / name, folder / name)
    mu, sigma = fid.save_statistics(str(folder), str(root / "stats.npz"), weights=weights)
    np.save(root / "stats.npy", {"mu": mu, "sigma": sigma})  # how DDGAN ships its statistics
    return argparse.Namespace(folder=folder, npz=root / "stats.npz", npy=root / "stats.npy", weights=weights)


@pytest.mark.slow
def test_seed003_sampling_line_against_each_kind_of_reference(experiment, references):
    values = {}
    for kind in ("folder", "npz", "npy"):
        proc = ok(helpers.py("ddgan.sample", *words(SEED003_SAMPLE, TINY_MODEL), "--real_img_dir",
                             getattr(references, kind), "--num_samples", 6, "--batch_size", 3,
                             "--inception_weights", references.weights, cwd=experiment.cwd))
        values[kind] = float(re.search(r"^FID = (\S+)$", proc.stdout, re.M)[1])
    assert values["npz"] == pytest.approx(values["npy"], rel=1e-9)
    assert values["folder"] == pytest.approx(values["npz"], rel=1e-6) and values["npz"] > 0
    # test_ddgan.py's image folder, and a fresh one for each later run: nothing is written over
    out = sorted(p for p in os.listdir(experiment.cwd / "generated_samples") if p.startswith("cifar10"))
    assert len(out) == 3 and out[0] == "cifar10"
    jpgs = sorted(os.listdir(experiment.cwd / "generated_samples" / "cifar10"))
    assert jpgs == [f"{i}.jpg" for i in range(6)]
    assert Image.open(experiment.cwd / "generated_samples" / "cifar10" / "0.jpg").size == (32, 32)


@pytest.mark.parametrize("argv,message", [
    (["--exp", "no_such_exp"], "no such experiment folder (--exp no_such_exp, --dataset cifar10)"),
    (["--exp", "ddgan_cifar10_exp1", "--epoch_id", "7"], "netG_7.pth: no such file (--epoch_id 7)"),
    (["--exp", "ddgan_cifar10_exp1", "--epoch_id", "0", "--compute_fid", "--real_img_dir", "bad.npy"],
     "bad.npy: not DDGAN FID statistics"),
    (["--model_path", "x", "--exp", "ddgan_cifar10_exp1"], "both name a model"),
])
@pytest.mark.slow
def test_sampling_refusals_are_one_line(experiment, argv, message, monkeypatch, capsys):
    from ddgan import sample

    np.save(experiment.cwd / "bad.npy", np.zeros(3))
    monkeypatch.chdir(experiment.cwd)
    before = sorted(os.listdir(experiment.cwd))
    code, err = main_in_process(sample, argv + words(TINY_MODEL), monkeypatch, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(os.listdir(experiment.cwd)) == before


def test_num_process_per_node_must_agree_with_torchrun(monkeypatch, capsys, tmp_path):
    from ddgan import train as ddgan_train

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.chdir(tmp_path)
    argv = words(README_TRAIN.replace("--num_process_per_node 2", "--num_process_per_node 4"))
    code, err = main_in_process(ddgan_train, argv + ["--data_dir", tmp_path], monkeypatch, capsys)
    assert code == 2, err
    assert "--num_process_per_node 4 disagrees with torchrun, which started 2 processes per node" in err
    assert not (tmp_path / "saved_info").exists()


@pytest.mark.slow
def test_num_process_per_node_disagreeing_with_a_real_torchrun(tmp_path):
    proc = helpers.launch("torchrun", 2, "ddgan.train", *words(README_TRAIN.replace("--num_process_per_node 2",
                                                                                    "--num_process_per_node 4")),
                          "--data_dir", tmp_path, cwd=tmp_path)
    assert proc.returncode != 0
    ours = [line for line in helpers.error_lines(proc) if "disagrees" in line]
    assert ours and ours[0] == ("ddgan.train: error: --num_process_per_node 4 disagrees with torchrun, which "
                                "started 2 processes per node; drop the flag or start torchrun with 4"), proc.stderr
    assert not (tmp_path / "saved_info").exists()
