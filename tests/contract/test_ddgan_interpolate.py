"""ddgan.interpolate: x_T and z interpolation rows on a tiny generator trained 2 steps; both
rows start at ddgan.sample's sample 0 of the first seed; the flag file drives it; bad input is
one line."""

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from _support.entry import main_in_process
from _support.flags import DDGAN_FLAGS as FLAGS
from _support.flags import DDGAN_SMALL_MODEL as SMALL_MODEL
from ddgan import interpolate, sample


@pytest.fixture(scope="module")
def ddgan_run(trained_run):
    return trained_run("ddgan_small")  # conftest.RUN_RECIPES: test_ddgan_cli.SMALL, 2 steps


def test_draws_are_the_samplers_and_rows_vary_one_thing():
    shape, nz, T = (1, 4, 4), 3, 2
    x_T, zs, noises = interpolate.seed_draws(7, shape, nz, T)
    assert x_T.shape == shape and [z.shape for z in zs] == [(nz,)] * T and [n.shape for n in noises] == [shape] * T
    x, z, n = interpolate.interpolation_inputs([7, 8], shape, nz, T, 3, ["x_T", "z"], ["slerp"])
    other = interpolate.seed_draws(8, shape, nz, T)
    assert x.shape == (6, *shape) and [t.shape for t in z] == [(6, nz)] * T
    assert torch.equal(x[0], x_T) and torch.equal(x[2], other[0]) and torch.equal(x[3], x_T) and torch.equal(x[5], x_T)
    for k in range(T):
        assert torch.equal(z[k][:3], zs[k].expand(3, -1))  # x_T row: every z is the first seed's
        assert torch.equal(z[k][3], zs[k]) and torch.equal(z[k][5], other[1][k])  # z row: from a's to b's
        assert torch.equal(n[k], noises[k].expand(6, *shape))  # the posterior noise: the first seed's


def test_cli_grid_npz_ends_and_bad_seeds(ddgan_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "grid.png"
    code, err = main_in_process(interpolate, ["--model_path", ddgan_run, "--seeds", "1,2,3", "--num_steps", 3, "--out",
                                              out, "--logdir", tmp_path / "i"], monkeypatch, capsys)
    assert code == 0, err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (3 * 18 + 2, 4 * 18 + 2)  # 2 pairs x (x_T, z) rows
    with np.load(tmp_path / "grid.npz") as f:
        images = f["arr_0"]
    assert images.shape == (12, 16, 16, 1) and images.dtype == np.uint8
    code, err = main_in_process(sample, ["--model_path", ddgan_run, "--num_samples", 1, "--seed", 1, "--logdir",
                                         tmp_path / "s"], monkeypatch, capsys)
    assert code == 0, err
    with np.load(tmp_path / "s" / "samples_1x16x16x1.npz") as f:
        first = f["arr_0"][0].astype(int)
    for k in (0, 3):  # both rows of the first pair start at seed 1's sample (to 1/255: batch size differs)
        assert np.abs(images[k].astype(int) - first).max() <= 1, k
    code, err = main_in_process(interpolate, ["--model_path", ddgan_run, "--seeds", "1", "--logdir", tmp_path / "x"],
                                monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "need at least two seeds" in err, err
    assert not (tmp_path / "x").exists()


def test_the_flag_file_drives_it(ddgan_run, tmp_path, monkeypatch, capsys):
    """What launch/run.sh gives ddgan.interpolate from digits16.sh ($MODEL_FLAGS $DIFFUSION_FLAGS
    $INTERPOLATE_FLAGS: seeds 0,1,2, i.e. two pairs x modes x_T and z, 8 images a row), the small
    model's flags after it."""
    script = 'source "$1"; printf "%s\\n" $MODEL_FLAGS $DIFFUSION_FLAGS $INTERPOLATE_FLAGS'
    proc = subprocess.run(["bash", "-c", script, "_", FLAGS], capture_output=True, text=True, check=True)
    words = proc.stdout.split()
    out = tmp_path / "i"
    code, err = main_in_process(interpolate, [*words, "--model_path", ddgan_run, *SMALL_MODEL, "--logdir", out],
                                monkeypatch, capsys)
    assert code == 0, err
    with Image.open(out / "interpolation.png") as im:
        assert im.size == (8 * 18 + 2, 4 * 18 + 2)
    with np.load(out / "interpolation.npz") as f:
        assert f["arr_0"].shape == (32, 16, 16, 1)
