"""evaluations.fid against `python -m pytorch_fid`, offline, on random Inception weights.

Both tools read the same weights file from a temporary TORCH_HOME. Most comparisons use the
64-dimensional block (cheap on CPU); one compares the 2048-dimensional statistics directly.
"""

import os
import re
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import helpers
from _support.entry import exit_code
from evaluations import fid, inception


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    path = home / "hub" / "checkpoints" / inception.WEIGHTS_NAME
    inception.make_random_weights(str(path), seed=0, calibration_batches=1, batch_size=2)
    return home


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two folders of 12 small RGB images from different distributions."""
    root = tmp_path_factory.mktemp("fid_images")
    rng = np.random.default_rng(0)
    out = {}
    for name, lo in (("a", 0), ("b", 80)):
        d = root / name
        d.mkdir()
        for i in range(12):
            coarse = rng.integers(lo, 256, (4, 4, 3)).astype(np.uint8)
            Image.fromarray(coarse).resize((16, 16), Image.BILINEAR).save(d / f"{i % 10}_{i:06d}.png")
        out[name] = d
    return out


@pytest.fixture
def offline_home(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


def env_for(torch_home):
    return helpers.test_env(TORCH_HOME=torch_home)


def parse_fid(stdout):
    m = re.search(r"FID:\s+(\S+)", stdout)
    assert m, stdout
    return float(m.group(1))


def test_fid_equals_pytorch_fid(torch_home, folders):
    args = ["--dims", "64", "--num-workers", "0", "--device", "cpu", folders["a"], folders["b"]]
    theirs = helpers.py("pytorch_fid", *args, env=env_for(torch_home), timeout=600)
    assert theirs.returncode == 0, helpers.describe(theirs)
    ours = helpers.py("evaluations.fid", *args, env=env_for(torch_home), timeout=600)
    assert ours.returncode == 0, helpers.describe(ours)
    value = parse_fid(ours.stdout)
    assert value > 0.1  # random weights still separate the two folders
    assert abs(value - parse_fid(theirs.stdout)) < 1e-3


def test_2048_statistics_equal_pytorch_fid(torch_home, folders, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    small = tmp_path / "small"
    small.mkdir()
    for name in sorted(os.listdir(folders["a"]))[:3]:
        (small / name).write_bytes((folders["a"] / name).read_bytes())
    theirs = helpers.py("pytorch_fid", "--save-stats", "--num-workers", "0", "--device", "cpu", small,
                        tmp_path / "theirs.npz", env=env_for(torch_home), timeout=600)
    assert theirs.returncode == 0, helpers.describe(theirs)
    mu, sigma = fid.save_statistics(str(small), str(tmp_path / "ours.npz"), dims=2048, num_workers=0, device="cpu")
    with np.load(tmp_path / "theirs.npz") as z, np.load(tmp_path / "ours.npz") as o:
        assert sorted(o.files) == ["mu", "sigma"] and o["mu"].dtype == np.float64 and o["mu"].shape == (2048,)
        np.testing.assert_allclose(o["mu"], z["mu"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(o["sigma"], z["sigma"], rtol=1e-3, atol=1e-3 * np.abs(z["sigma"]).max())
    assert sigma.std() > 0  # features did not collapse


def test_folder_npz_and_stats_inputs_agree(offline_home, folders, tmp_path):
    from evaluations import images_to_npz

    images, labels = images_to_npz.read_folder(str(folders["a"]))
    npz_a = images_to_npz.write_npz(str(tmp_path / "a.npz"), images, labels)
    # the same batch size throughout: a different batch composition changes float32 features
    # in the last bits (batched convolutions), which is all these comparisons would then see
    kw = dict(dims=64, num_workers=0, batch_size=5)
    fid.save_statistics(str(folders["b"]), str(tmp_path / "b_stats.npz"), **kw)
    from_folders = fid.fid_of_paths(str(folders["a"]), str(folders["b"]), **kw)
    from_npz = fid.fid_of_paths(npz_a, str(tmp_path / "b_stats.npz"), **kw)
    fid.save_statistics(npz_a, str(tmp_path / "a_stats.npz"), **kw)
    from_stats = fid.fid_of_paths(str(tmp_path / "a_stats.npz"), str(tmp_path / "b_stats.npz"), **kw)
    # 12 images in 64 dimensions: singular covariances, where last-bit differences in sigma move
    # the distance by ~sqrt(machine epsilon); the statistics themselves agree to rounding
    assert from_folders == pytest.approx(from_npz, rel=1e-7)
    assert from_folders == pytest.approx(from_stats, rel=1e-7)
    with np.load(tmp_path / "a_stats.npz") as z:
        mu, sigma = fid.statistics_of_path(str(folders["a"]), fid.FeatureModel(64), batch_size=5, num_workers=0)
        np.testing.assert_allclose(z["mu"], mu, rtol=1e-14, atol=0)
        np.testing.assert_allclose(z["sigma"], sigma, rtol=0, atol=1e-14 * np.abs(sigma).max())
    # a grayscale npz is treated as PIL treats an "L" image: the channel repeated three times
    gray = images[..., :1]
    mu1, s1 = fid.statistics_of_images(gray, fid.FeatureModel(64), num_workers=0)
    mu3, s3 = fid.statistics_of_images(np.repeat(gray, 3, axis=3), fid.FeatureModel(64), num_workers=0)
    np.testing.assert_array_equal(mu1, mu3)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun"])
def test_two_ranks_equal_one(torch_home, folders, tmp_path, launcher):
    common = ["--save-stats", "--dims", "64", "--batch-size", "4", "--num-workers", "0", folders["a"]]
    one = helpers.py("evaluations.fid", *common, tmp_path / "one.npz", env=env_for(torch_home), timeout=600)
    assert one.returncode == 0, helpers.describe(one)
    two = helpers.launch(launcher, 2, "evaluations.fid", *common, tmp_path / "two.npz", env=env_for(torch_home))
    assert two.returncode == 0, helpers.describe(two)
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        scale = np.abs(a["sigma"]).max()
        assert np.abs(a["mu"] - b["mu"]).max() <= 1e-10 * np.abs(a["mu"]).max()
        assert np.abs(a["sigma"] - b["sigma"]).max() <= 1e-10 * scale


# --- bad inputs: one line naming the input, exit status 2 -----------------------------------

def _stats(path, d):
    np.savez(path, mu=np.zeros(d), sigma=np.eye(d))
    return path


def bad_case(name, tmp, folders):
    """(argv, fragment expected in the error line)"""
    a = str(folders["a"])
    if name == "missing_path":
        return [a, str(tmp / "nowhere")], "nowhere: no such file or directory"
    if name == "empty_folder":
        (tmp / "empty").mkdir()
        return [str(tmp / "empty"), a], "empty: no images"
    if name == "single_image":
        (tmp / "one").mkdir()
        Image.new("RGB", (8, 8)).save(tmp / "one" / "x.png")
        return [str(tmp / "one"), a], "one: 1 image"
    if name == "mixed_sizes":
        (tmp / "mixed").mkdir()
        Image.new("RGB", (8, 8)).save(tmp / "mixed" / "0.png")
        Image.new("RGB", (9, 8)).save(tmp / "mixed" / "1.png")
        return [str(tmp / "mixed"), a], "1.png: image is 9x8 but 0.png is 8x8"
    if name == "corrupt_image":
        (tmp / "corrupt").mkdir()
        Image.new("RGB", (8, 8)).save(tmp / "corrupt" / "0.png")
        (tmp / "corrupt" / "1.png").write_bytes(b"\x89PNG broken")
        return [str(tmp / "corrupt"), a], "1.png: cannot read image"
    if name == "not_npz":
        (tmp / "notes.txt").write_text("hi")
        return [str(tmp / "notes.txt"), a], "notes.txt: not an image folder, an .npz file or DDGAN's .npy statistics"
    if name == "wrong_npz_keys":
        np.savez(tmp / "keys.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
        return [str(tmp / "keys.npz"), a], "keys.npz: no arr_0"
    if name == "float_npz":
        np.savez(tmp / "float.npz", arr_0=np.zeros((2, 4, 4, 3), np.float32))
        return [str(tmp / "float.npz"), a], "float.npz: images must be uint8"
    if name == "corrupt_npz":
        (tmp / "broken.npz").write_bytes(b"PK not really")
        return [str(tmp / "broken.npz"), a], "broken.npz: not a readable npz"
    if name == "stats_dims_mismatch":
        return [str(_stats(tmp / "s64.npz", 64)), str(_stats(tmp / "s192.npz", 192))], "64-dimensional statistics but"
    if name == "stats_vs_dims_flag":
        return (["--dims", "192", str(_stats(tmp / "s64.npz", 64)), a],
                "s64.npz: statistics have 64 dimensions but --dims is 192")
    if name == "stats_shape":
        np.savez(tmp / "shape.npz", mu=np.zeros(3), sigma=np.eye(4))
        return [str(tmp / "shape.npz"), str(_stats(tmp / "s3.npz", 3))], "shape.npz: mu has shape"
    if name == "missing_weights_file":
        return ["--dims", "64", "--inception_weights", str(tmp / "w.pth"), a, a], "w.pth: no such file"
    if name == "bad_weights_file":
        (tmp / "w.pth").write_bytes(b"garbage")
        return ["--dims", "64", "--inception_weights", str(tmp / "w.pth"), a, a], "w.pth: not a torch weights file"
    if name == "wrong_weights_layout":
        torch.save({"conv.weight": torch.zeros(1)}, tmp / "w.pth")
        return (["--dims", "64", "--inception_weights", str(tmp / "w.pth"), a, a],
                "w.pth: not pytorch-fid Inception weights")
    if name == "save_stats_exists":
        _stats(tmp / "exists.npz", 3)
        return ["--save-stats", a, str(tmp / "exists.npz")], "exists.npz: output file exists"
    if name == "bad_dims":
        return ["--dims", "100", a, a], "--dims"
    if name == "bad_batch_size":
        return ["--batch-size", "0", a, a], "--batch-size 0"
    raise KeyError(name)


BAD_CASES = ["missing_path", "empty_folder", "single_image", "mixed_sizes", "corrupt_image", "not_npz",
             "wrong_npz_keys", "float_npz", "corrupt_npz", "stats_dims_mismatch", "stats_vs_dims_flag",
             "stats_shape", "missing_weights_file", "bad_weights_file", "wrong_weights_layout",
             "save_stats_exists", "bad_dims", "bad_batch_size"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line(case, offline_home, folders, tmp_path, capsys):
    argv, fragment = bad_case(case, tmp_path, folders)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert exit_code(fid.main, "--num-workers", "0", "--dims", "64", *argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert fragment in err[0], err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_missing_weights_offline(folders, tmp_path, monkeypatch, capsys):
    """No weights in TORCH_HOME and no network: one line saying where to put the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    assert exit_code(fid.main, "--dims", "64", "--num-workers", "0", folders["a"], folders["b"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and inception.WEIGHTS_NAME in err[0] and "--inception_weights" in err[0], err
