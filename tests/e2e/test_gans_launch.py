"""gans.train / sample / interpolate as real processes under mpiexec -n 2 and torchrun 2.

Tiny digits runs (16 px, 8-channel networks, a few steps), one per launcher: losses finite, a
grid PNG, an npz that does not depend on the rank count. (A resume's bits: the family's in
tests/contract/test_task_contract.py, the launchers' in tests/e2e/test_trainkit_dist.py.)
"""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import helpers
from gans import script_util
from trainkit import npz, sampling

pytestmark = pytest.mark.slow

FLAGS = helpers.ROOT / "flags" / "gans" / "cdcgan_digits.sh"
TINY = ("--nz", 8, "--ngf", 8, "--ndf", 8, "--batch_size", 8, "--max_steps", 4, "--save_interval", 2,
        "--log_interval", 1)


def _ok(proc):
    assert proc.returncode == 0, helpers.describe(proc)
    return proc


def _check_training_run(run_dir, steps=4, image_size=16):
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # one row per step with --log_interval 1
    for r in rows:
        for k in ("loss_d", "loss_g", "d_real", "d_fake", "d_fake_g", "grad_norm_d", "grad_norm"):
            assert isinstance(r[k], float) and math.isfinite(r[k]), (k, r)
        assert 0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1
    with Image.open(run_dir / f"grid{steps:06d}.png") as im:
        # 64 images in an 8 x 8 grid, 2 px padding (torchvision's default)
        assert im.format == "PNG" and im.size == (8 * (image_size + 2) + 2,) * 2
    options = json.loads((run_dir / "options.json").read_text())
    assert options["_run"]["world_size"] == 2


def test_mpiexec_cdcgan_train_sample(tmp_path, digits):
    data = digits(16)
    a = tmp_path / "a"
    first = _ok(helpers.launch("mpiexec", 2, "gans.train", "--data_dir", data, "--logdir", a, *TINY,
                               flag_files=[FLAGS]))
    assert "Warning" not in first.stderr  # e.g. torch 2.14's deprecation of DDP's broadcast_buffers
    _check_training_run(a)
    assert json.loads((a / "options.json").read_text())["_run"]["launcher"] == "mpi"

    # sampling split over 2 ranks gives what one process computes with another batch size
    s2 = tmp_path / "s2"
    _ok(helpers.launch("mpiexec", 2, "gans.sample", "--model_path", a, "--num_samples", 11, "--batch_size", 3,
                       "--logdir", s2, "--seed", 7, *TINY[:6], flag_files=[FLAGS]))
    with np.load(s2 / "samples_11x16x16x1.npz") as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (11, 16, 16, 1)
    assert labels.dtype == np.int64 and set(labels) <= set(range(10))
    G, _ = script_util.load_generator(str(a / "model000004.pt"))
    with torch.no_grad():
        rnd = sampling.PerSampleRandom(7, range(11))
        z = rnd.randn(G.nz, 1, 1)
        y = rnd.randint(G.num_classes)
        expected = npz.to_uint8(G(z, y))
    assert np.array_equal(labels, y.numpy()) and np.array_equal(images, expected)


def test_torchrun_dcgan_sync_bn_accumulation_ema(tmp_path, digits):
    data = digits(16)
    a = tmp_path / "a"
    extra = ("--model", "dcgan", "--sync_bn", "true", "--grad_accum", 2, "--ema_rate", "0.9", "--loss", "hinge")
    _ok(helpers.launch("torchrun", 2, "gans.train", "--data_dir", data, "--logdir", a, *TINY, *extra,
                       flag_files=[FLAGS]))
    _check_training_run(a)
    assert json.loads((a / "options.json").read_text())["_run"]["launcher"] == "torchrun"
    rows = [json.loads(line) for line in (a / "stats.jsonl").read_text().splitlines()]
    # --batch_size is per rank and step whatever --grad_accum: steps x batch x ranks
    assert rows[-1]["samples"] == 4 * 8 * 2
    assert ["ema_0.9_000004.pt"] == [p.name for p in a.glob("ema_*000004.pt")]

    # unconditional npz: no arr_1
    _ok(helpers.launch("torchrun", 2, "gans.sample", "--model_path", a / "ema_0.9_000004.pt", "--num_samples", 6,
                       "--logdir", tmp_path / "s", *TINY[:6], "--model", "dcgan", flag_files=[FLAGS]))
    with np.load(tmp_path / "s" / "samples_6x16x16x1.npz") as f:
        assert sorted(f.files) == ["arr_0"] and f["arr_0"].shape == (6, 16, 16, 1)
