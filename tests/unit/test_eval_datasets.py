"""datasets/*.py on tiny archives built here in the real formats (tarball of pickles, IDX .gz,
zip of JPEGs, a folder tree)."""

import importlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

import helpers
from _support.entry import exit_code
from archives import celeba_image, celeba_zip, idx_gz, mnist_files


def script(name):
    return importlib.import_module(name)


def read_png(path):
    with Image.open(path) as im:
        return np.asarray(im)


def one_error_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# --- CIFAR-10 -------------------------------------------------------------------------------

def cifar_tarball(path, per_batch=2, seed=0):
    """cifar-10-python.tar.gz layout: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""
    rng = np.random.default_rng(seed)
    batches = {}
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj):
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))

        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            labels = [int(x) for x in rng.integers(0, 10, per_batch)]
            batches[name] = (data, labels)
            add(name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                       b"filenames": [b"x.png"] * per_batch})
        add("batches.meta", {b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch})
    return batches


def test_cifar10(tmp_path):
    batches = cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    assert exit_code(script("cifar10").main, tmp_path / "cifar-10-python.tar.gz", "--out", tmp_path / "out") == 0
    train = sorted(os.listdir(tmp_path / "out" / "train"), key=lambda n: int(n.split("_")[1][:-4]))
    test = sorted(os.listdir(tmp_path / "out" / "test"))
    assert len(train) == 10 and len(test) == 2
    data, labels = batches["data_batch_2"]
    # index 3 = data_batch_2's second image; rows are 1024 R, 1024 G, 1024 B values
    assert train[3] == f"{labels[1]}_00003.png"
    expected = data[1].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(read_png(tmp_path / "out" / "train" / train[3]), expected)
    assert train[0].endswith("_00000.png") and len(train[0].split("_")[1]) == len("00000.png")


def test_cifar10_refuses_code_in_pickles(tmp_path, capsys):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            raw = pickle.dumps({b"data": os.getcwd, b"labels": []})  # a global that is not an array
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    assert exit_code(script("cifar10").main, path, "--out", tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert "evil.tar.gz" in line and "not a CIFAR-10 python batch" in line
    assert not (tmp_path / "out" / "train").exists()


# --- MNIST / Fashion-MNIST ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_formats(tmp_path, name):
    data = mnist_files(tmp_path / "dl")
    assert exit_code(script(name).main, tmp_path / "dl", "--out", tmp_path / "out") == 0
    images, labels = data["train"]
    for i in range(3):
        path = tmp_path / "out" / "train" / f"{labels[i]}_{i:05d}.png"
        np.testing.assert_array_equal(read_png(path), images[i])
    assert len(os.listdir(tmp_path / "out" / "test")) == 2
    assert exit_code(script(name).main, tmp_path / "dl", "--out", tmp_path / "out32", "--size", 32) == 0
    assert read_png(tmp_path / "out32" / "test" / f"{data['t10k'][1][0]}_00000.png").shape == (32, 32)


def test_mnist_bad_inputs(tmp_path, capsys):
    mnist_files(tmp_path / "dl")
    # wrong magic: an images file announcing 1 dimension
    idx_gz(tmp_path / "dl" / "t10k-images-idx3-ubyte.gz", np.zeros(5, np.uint8))
    assert exit_code(script("mnist").main, tmp_path / "dl", "--out", tmp_path / "out") == 2
    assert "t10k-images-idx3-ubyte.gz: not an IDX file" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()
    os.remove(tmp_path / "dl" / "t10k-labels-idx1-ubyte.gz")
    assert exit_code(script("mnist").main, tmp_path / "dl", "--out", tmp_path / "out") == 2
    assert "t10k-labels-idx1-ubyte.gz: no such file" in one_error_line(capsys)
    (tmp_path / "dl" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    mnist_files(tmp_path / "dl2")
    (tmp_path / "dl2" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    assert exit_code(script("mnist").main, tmp_path / "dl2", "--out", tmp_path / "out") == 2
    assert "train-images-idx3-ubyte.gz: cannot read" in one_error_line(capsys)
    assert exit_code(script("mnist").main, tmp_path / "nowhere", "--out", tmp_path / "out") == 2
    assert "nowhere: no such folder" in one_error_line(capsys)


# --- CelebA ---------------------------------------------------------------------------------

@pytest.mark.parametrize("as_zip", [True, False])
def test_celeba(tmp_path, as_zip):
    numbers = [1, 2, 162771, 182638]
    if as_zip:
        src = tmp_path / "img_align_celeba.zip"
        celeba_zip(src, numbers)
    else:
        src = tmp_path / "img_align_celeba"
        src.mkdir()
        for k in numbers:
            (src / f"{k:06d}.jpg").write_bytes(celeba_image(k % 7))
    assert exit_code(script("celeba").main, src, "--out", tmp_path / "out") == 0
    assert sorted(os.listdir(tmp_path / "out" / "train")) == ["0_00000.png", "0_00001.png"]
    assert os.listdir(tmp_path / "out" / "valid") == ["0_00000.png"]
    assert os.listdir(tmp_path / "out" / "test") == ["0_00000.png"]
    image = read_png(tmp_path / "out" / "train" / "0_00001.png")
    assert image.shape == (64, 64, 3)
    assert image.min() > 200  # the crop kept exactly the bright centre


def test_celeba_bad_archive(tmp_path, capsys):
    (tmp_path / "img_align_celeba.zip").write_bytes(b"PK broken")
    assert exit_code(script("celeba").main, tmp_path / "img_align_celeba.zip", "--out", tmp_path / "out") == 2
    assert "img_align_celeba.zip: not a readable zip archive" in one_error_line(capsys)


# --- generic folder tree ----------------------------------------------------------------------

def test_image_folder_with_subfolder_labels(tmp_path):
    src = tmp_path / "src"
    for cls, sizes in (("cats", [(40, 30), (30, 40)]), ("dogs", [(64, 64), (100, 20), (21, 21)])):
        (src / cls / "deeper").mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size, (10 * i, 100, 200)).save(src / cls / "deeper" / f"img{i}.JPG")
    assert exit_code(script("image_folder").main, src, "--out", tmp_path / "out", "--size", 16,
                     "--labels", "subfolders", "--test_fraction", 0.4) == 0
    train, test = os.listdir(tmp_path / "out" / "train"), os.listdir(tmp_path / "out" / "test")
    assert len(train) == 3 and len(test) == 2
    labels = sorted(n.split("_")[0] for n in train + test)
    assert labels == ["0", "0", "1", "1", "1"]
    for split, names in (("train", train), ("test", test)):
        for n in names:
            assert read_png(tmp_path / "out" / split / n).shape == (16, 16, 3)
    assert (tmp_path / "out" / "classes.txt").read_text() == "0 cats\n1 dogs\n"


def test_existing_output_refused(tmp_path, capsys):
    mnist_files(tmp_path / "dl")
    (tmp_path / "out" / "train").mkdir(parents=True)
    (tmp_path / "out" / "train" / "keep.png").write_bytes(b"")
    assert exit_code(script("mnist").main, tmp_path / "dl", "--out", tmp_path / "out") == 2
    assert "train: exists and is not empty" in one_error_line(capsys)
    assert os.listdir(tmp_path / "out" / "train") == ["keep.png"]


def test_fid_stats_from_the_command_line(tmp_path):
    """A real subprocess: mnist.py with --fid_stats writes pytorch-fid statistics of the split."""
    from evaluations import inception

    weights = inception.make_random_weights(str(tmp_path / "w.pth"), calibration_batches=1, batch_size=2)
    mnist_files(tmp_path / "dl", n_train=3, n_test=2)
    proc = helpers.script("datasets/mnist.py", tmp_path / "dl", "--out", tmp_path / "out", "--fid_stats", "test",
                          "--dims", "64", "--inception_weights", weights, "--device", "cpu",
                          env=helpers.test_env(), timeout=600)
    assert proc.returncode == 0, helpers.describe(proc)
    with np.load(tmp_path / "out" / "fid_stats_test.npz") as z:
        assert z["mu"].shape == (64,) and z["sigma"].shape == (64, 64)
    assert not (tmp_path / "out" / "fid_stats_train.npz").exists()
