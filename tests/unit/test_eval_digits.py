"""The offline digits metric: classifier accuracy, cache, FD-digits against the real export."""

import importlib.util
import os

import numpy as np
import pytest

import helpers
from evaluations import digits_features as df
from evaluations import images_to_npz


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("digits_cache"))


@pytest.fixture(scope="module")
def net(cache):
    return df.load_classifier(cache)


def test_split_matches_datasets_digits():
    spec = importlib.util.spec_from_file_location("digits_script", helpers.ROOT / "datasets" / "digits.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for a, b in zip(script.split_indices(1797, 0.2, 0), df.split_indices(1797, 0.2, 0)):
        np.testing.assert_array_equal(a, b)


def test_same_images_as_the_exported_folder(digits):
    images, labels = images_to_npz.read_folder(str(digits(size=16, split="test")))
    ours, our_labels = df.digits_images("test", 16)
    np.testing.assert_array_equal(images, ours)
    np.testing.assert_array_equal(labels, our_labels)


def test_accuracy_and_cache(net, cache):
    acc = df.test_accuracy(net)
    print("digits classifier test accuracy:", acc)
    assert acc[16] >= 0.95 and acc[32] >= 0.95
    path = df.cache_path(cache)
    assert os.path.isfile(path)
    again = df.load_classifier(cache)  # from the cache file this time
    images, _ = df.digits_images("test", 16)
    np.testing.assert_array_equal(df.classify(images, again), df.classify(images, net))
    # rgb input of the same digits is classified the same way
    np.testing.assert_array_equal(df.classify(np.repeat(images, 3, axis=3), net), df.classify(images, net))


def test_fd_digits_orders_quality(net):
    real, _ = df.digits_images("test", 16)
    fd_real = df.fd_digits(real, "train", net)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, real.shape, dtype=np.uint8)
    fd_noise = df.fd_digits(noise, "train", net)
    blurred = (0.5 * real + 0.5 * real.mean()).astype(np.uint8)  # washed-out digits
    fd_blur = df.fd_digits(blurred, "train", net)
    assert 0 <= fd_real < fd_blur < fd_noise
    assert fd_real < 0.1 * fd_noise
    # a 32 px export of the same digits is compared with 32 px references
    assert df.fd_digits(df.digits_images("test", 32)[0], "train", net) < 0.1 * fd_noise
    # identical sets: zero up to the rounding of singular covariances (dead ReLU features)
    assert df.fd_digits(df.digits_images("train", 16)[0], "train", net) == pytest.approx(0.0, abs=1e-3)


def test_command_line(digits, cache, capsys):
    df.main([str(digits(size=16, split="test")), "--cache_dir", cache, "--test_accuracy"])
    out = capsys.readouterr().out
    assert "FD-digits:" in out and "class accuracy:" in out and "test accuracy at 16px" in out
    acc = float(out.split("class accuracy:")[1].split()[0])
    assert acc >= 0.95


@pytest.mark.parametrize("case", ["missing", "float_npz"])
def test_bad_inputs(tmp_path, cache, capsys, case):
    if case == "missing":
        path, fragment = tmp_path / "nope.npz", "nope.npz: no such file"
    else:
        path, fragment = tmp_path / "f.npz", "f.npz: images must be uint8"
        np.savez(path, arr_0=np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(SystemExit) as e:
        df.main([str(path), "--cache_dir", cache])
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], lines
