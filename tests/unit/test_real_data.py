"""Real data where researchers keep it: torchvision's CIFAR-10 layout (./data/cifar-10-batches-py or
the tarball) read by every family's loader, DDGAN's ./data default and its one-line refusal, the
reference FID statistics picked per --dataset as test_ddgan.py does (and refused at another
resolution), and train_ddgan.py's LSUN subset (the first N images in LSUN's key order)."""

import argparse
import io
import json
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import helpers
from _support.entry import main_in_process
from trainkit import cifar_layout, data
from trainkit.errors import UserError

PER_BATCH = 2  # images per batch file: 10 training images, 2 test images
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
# a model small enough for one CPU step in about a second
TINY = ["--ch_mult", "1", "2", "--num_channels_dae", "8", "--ngf", "4", "--nz", "8", "--z_emb_dim", "16",
        "--t_emb_dim", "16", "--n_mlp", "1", "--num_res_blocks", "1", "--attn_resolutions", "16"]


def _batch_files(seed=0):
    """{name: pickled bytes} in CIFAR-10's python format, and the training images / labels it holds."""
    rng = np.random.default_rng(seed)
    files, rows, labels = {}, [], []
    for name in BATCHES:
        d = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, PER_BATCH)]
        files[name] = pickle.dumps({b"batch_label": name.encode(), b"labels": y, b"data": d,
                                    b"filenames": [b"x.png"] * PER_BATCH}, protocol=2)
        if name != "test_batch":
            rows.append(d)
            labels += y
    files["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2)
    return files, np.concatenate(rows), np.array(labels, dtype=np.int64)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """torchvision's root with the extracted folder, a folder with only the tarball, and the
    expected training set: rows (N x 3072, C,H,W) and labels."""
    files, rows, labels = _batch_files()
    root = tmp_path_factory.mktemp("data")
    folder = root / cifar_layout.FOLDER
    folder.mkdir()
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    tar_root = tmp_path_factory.mktemp("tar_only")
    tarball = tar_root / cifar_layout.ARCHIVE
    with tarfile.open(tarball, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{cifar_layout.FOLDER}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return argparse.Namespace(root=root, folder=folder, tar_root=tar_root, tarball=tarball, rows=rows, labels=labels)


def _check_pixels(images_nchw, rows):
    """Images (uint8 N,C,H,W) equal the batches' rows: 1024 red, 1024 green, 1024 blue values, row by row."""
    images_nchw = np.asarray(images_nchw)
    # by hand for one pixel: image 3, row 1, column 2 -> R at 1*32+2, G 1024 later, B 2048 later
    assert [images_nchw[3, c, 1, 2] for c in range(3)] == [rows[3, 34], rows[3, 1024 + 34], rows[3, 2048 + 34]]
    np.testing.assert_array_equal(images_nchw, rows.reshape(-1, 3, 32, 32))


@pytest.mark.parametrize("where", ["root", "folder", "tar_root", "tarball"])
def test_every_form_of_the_layout_reads_back_exactly(cifar, where):
    d = data.load_dataset(str(getattr(cifar, where)), 32, class_cond=True)
    _check_pixels(d.images, cifar.rows)
    assert torch.equal(d.labels, torch.from_numpy(cifar.labels)) and d.num_classes == 10
    images, labels = cifar_layout.read_split(str(getattr(cifar, where)))
    assert images.shape == (10, 32, 32, 3)  # H,W,C, as a samples npz
    np.testing.assert_array_equal(images.transpose(0, 3, 1, 2), cifar.rows.reshape(-1, 3, 32, 32))
    test_images, test_labels = cifar_layout.read_split(str(getattr(cifar, where)), "test")
    assert test_images.shape == (PER_BATCH, 32, 32, 3) and len(test_labels) == PER_BATCH


class _Python2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 strings (SHORT_BINSTRING / BINSTRING), as the download's batch
    files hold their keys and their arrays' bytes: Python 3 itself never writes those opcodes."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _pickled(obj, how):
    """`obj` (a batch with str keys) pickled by Python 3 with protocol `how`, or as Python 2 did."""
    if how == "python2":
        buf = io.BytesIO()
        _Python2Pickler(buf, protocol=2).dump(_bytes_keys(obj))
        return buf.getvalue()
    return pickle.dumps(obj, protocol=how)


def _bytes_keys(obj):
    if isinstance(obj, dict):
        return {k.encode(): _bytes_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [x.encode() if isinstance(x, str) else x for x in obj]
    return obj.encode() if isinstance(obj, str) else obj


def _write_layout(files, root, tar_root):
    """The batch files as torchvision's extracted folder under `root` and as its tarball in `tar_root`."""
    folder = root / cifar_layout.FOLDER
    folder.mkdir(parents=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    tar_root.mkdir(parents=True)
    with tarfile.open(tar_root / cifar_layout.ARCHIVE, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{cifar_layout.FOLDER}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


# 2 and 4: Python 3's protocols with and without bytes stored through _codecs; 5: Python 3.14's
# default, arrays through numpy's _frombuffer; python2: how the download itself is pickled.
@pytest.mark.parametrize("how", [2, 4, 5, "python2"])
def test_batches_pickled_by_python3_or_2_read_as_torchvision_reads_them(how, tmp_path, monkeypatch):
    """A cluster user's CIFAR-10 re-pickled by Python 3 (str keys 'data', 'labels'; labels a numpy
    array in one batch, 'fine_labels' in another) reads, from the folder and from the tarball,
    exactly what torchvision's CIFAR10 reads from the same files."""
    torchvision_cifar = pytest.importorskip("torchvision.datasets.cifar")
    rng = np.random.default_rng(7)
    files = {}
    for i, name in enumerate(BATCHES):
        d = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, PER_BATCH)
        labels = y if i == 1 else [int(v) for v in y]
        files[name] = _pickled({"batch_label": name, "fine_labels" if i == 2 else "labels": labels, "data": d,
                                "filenames": ["x.png"] * PER_BATCH}, how)
    files["batches.meta"] = _pickled({"label_names": ["airplane"] * 10, "num_vis": 3072}, how)
    _write_layout(files, tmp_path / "root", tmp_path / "tar")
    # torchvision checks the download's md5 sums, which these files cannot match; its reading is the same
    monkeypatch.setattr(torchvision_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    for split, train in (("train", True), ("test", False)):
        reference = torchvision_cifar.CIFAR10(str(tmp_path / "root"), train=train)
        assert len(reference.data) == (10 if train else PER_BATCH)
        for source in (tmp_path / "root", tmp_path / "tar" / cifar_layout.ARCHIVE):
            images, labels = cifar_layout.read_split(str(source), split)
            np.testing.assert_array_equal(images, reference.data)
            assert labels.tolist() == list(reference.targets)
    loaded = data.load_dataset(str(tmp_path / "tar"), 32, class_cond=True)
    np.testing.assert_array_equal(loaded.images.permute(0, 2, 3, 1).numpy(),
                                  torchvision_cifar.CIFAR10(str(tmp_path / "root")).data)


def test_openai_load_data_reads_the_tarball(cifar):
    """improved_diffusion's openai API (image_datasets.load_data) on the tarball: pixels and labels in order."""
    from improved_diffusion import image_datasets

    images, kwargs = next(image_datasets.load_data(data_dir=str(cifar.tarball), batch_size=10, image_size=32,
                                                   class_cond=True, deterministic=True))
    _check_pixels(((images + 1) * 127.5).round().to(torch.uint8), cifar.rows)
    assert kwargs["y"].tolist() == cifar.labels.tolist()


def test_the_extracted_folder_wins_over_the_tarball_beside_it(cifar, tmp_path):
    (tmp_path / cifar_layout.FOLDER).symlink_to(cifar.folder)
    (tmp_path / cifar_layout.ARCHIVE).write_bytes(b"not a tarball")
    assert cifar_layout.find(str(tmp_path)) == str(tmp_path / cifar_layout.FOLDER)
    assert cifar_layout.find(str(tmp_path / "nothing")) is None


def test_a_damaged_tarball_or_batch_is_one_line_naming_it(cifar, tmp_path):
    cut = tmp_path / cifar_layout.ARCHIVE
    cut.write_bytes(cifar.tarball.read_bytes()[:200])
    with pytest.raises(UserError, match=f"^{cut}: not a readable tar archive"):
        data.load_dataset(str(tmp_path), 32)
    folder = tmp_path / "other" / cifar_layout.FOLDER
    folder.mkdir(parents=True)
    for name in BATCHES:
        (folder / name).write_bytes((cifar.folder / name).read_bytes())
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": os.getcwd, b"labels": []}))
    with pytest.raises(UserError, match="data_batch_3: not a CIFAR-10 python batch .*refusing posix.getcwd"):
        data.load_dataset(str(folder.parent), 32)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3: missing"):
        data.load_dataset(str(folder), 32)


def test_gans_train_on_torchvision_root(cifar, tmp_path, monkeypatch, capsys):
    """Another family's entry point with --data_dir naming torchvision's root: it trains on the 10 images."""
    from gans import train

    argv = ["--model", "dcgan", "--data_dir", cifar.root, "--image_size", 32, "--nz", 4, "--ngf", 4, "--ndf", 4,
            "--batch_size", 5, "--max_steps", 1, "--log_interval", 1, "--logdir", tmp_path / "run"]
    code, err = main_in_process(train, argv, monkeypatch, capsys)
    assert code == 0, err
    assert "10 images" in (tmp_path / "run" / "log.txt").read_text()


# --- DDGAN's ./data default -----------------------------------------------------------------

def test_ddgan_reads_dot_data_by_default(cifar, tmp_path, monkeypatch, capsys):
    from ddgan import train

    (tmp_path / "data").symlink_to(cifar.tar_root)  # ./data/cifar-10-python.tar.gz only
    monkeypatch.chdir(tmp_path)
    code, err = main_in_process(train, ["--dataset", "cifar10", *TINY, "--batch_size", 4, "--max_steps", 1,
                                        "--log_interval", 1, "--logdir", "run"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "options.json").read_text())["data_dir"] == "./data"
    assert "10 images, 2 steps per epoch" in (tmp_path / "run" / "log.txt").read_text()


@pytest.mark.parametrize("content", ["none", "empty", "pngs"])
def test_ddgan_without_cifar_in_dot_data_says_what_to_download(content, tmp_path, monkeypatch, capsys):
    from ddgan import train

    if content != "none":
        (tmp_path / "data").mkdir()
    if content == "pngs":  # an exported image folder is not torchvision's layout
        (tmp_path / "data" / "train").mkdir()
        Image.new("RGB", (32, 32)).save(tmp_path / "data" / "train" / "0_00000.png")
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    code, err = main_in_process(train, ["--dataset", "cifar10", *TINY], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("ddgan.train: error: ./data: no CIFAR-10 here")
    assert f"download {cifar_layout.URL} into ./data/" in lines[0]
    assert sorted(os.listdir(tmp_path)) == before  # no run folder, nothing downloaded


# --- reference FID statistics by --dataset --------------------------------------------------

@pytest.fixture
def stats_cwd(tmp_path, monkeypatch):
    """A working directory holding test_ddgan.py's three statistics files (tiny, 4 dimensions)."""
    (tmp_path / "pytorch_fid").mkdir()
    for name in ("cifar10_train_stat.npy", "celeba_256_stat.npy", "lsun_church_stat.npy"):
        np.save(tmp_path / "pytorch_fid" / name, {"mu": np.zeros(4), "sigma": np.eye(4)})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fid_args(**kw):
    return argparse.Namespace(**{"fid_stats": "", "compute_fid": True, "real_img_dir": None, **kw})


@pytest.mark.parametrize("dataset,size,expected", [
    ("cifar10", 32, "pytorch_fid/cifar10_train_stat.npy"),
    ("celeba_256", 256, "pytorch_fid/celeba_256_stat.npy"),
    ("lsun", 256, "pytorch_fid/lsun_church_stat.npy"),
])
def test_reference_statistics_follow_the_dataset(stats_cwd, dataset, size, expected):
    from ddgan import sample

    assert sample.fid_reference(_fid_args(), dataset, size) == (expected, 4)
    # a file of the user's own wins, as --real_img_dir says (test_ddgan.py ignores it for these names)
    np.savez(stats_cwd / "mine.npz", mu=np.zeros(3), sigma=np.eye(3))
    assert sample.fid_reference(_fid_args(real_img_dir="mine.npz"), dataset, size) == ("mine.npz", 3)
    assert sample.fid_reference(_fid_args(compute_fid=False), dataset, size) == (None, None)


def test_reference_of_another_resolution_is_refused_by_name(stats_cwd):
    from ddgan import sample

    with pytest.raises(UserError) as e:
        sample.fid_reference(_fid_args(), "lsun", 32)
    assert str(e.value) == "pytorch_fid/lsun_church_stat.npy: reference of 256x256 images, but --image_size is 32"
    with pytest.raises(UserError, match=r"cifar10_train_stat.npy: reference of 32x32 images, but --image_size is 256"):
        sample.fid_reference(_fid_args(compute_fid=False, fid_stats="pytorch_fid/cifar10_train_stat.npy"),
                             "celeba_256", 256)
    (stats_cwd / "real").mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16)).save(stats_cwd / "real" / f"{i}.png")
    with pytest.raises(UserError, match=r"^real: reference of 16x16 images, but --image_size is 32$"):
        sample.fid_reference(_fid_args(real_img_dir="real"), "cifar10", 32)
    assert sample.fid_reference(_fid_args(real_img_dir="real"), "cifar10", 16) == ("real", 2048)


def test_unknown_dataset_or_missing_default_statistics_is_one_line(tmp_path, monkeypatch):
    from ddgan import sample

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="^--dataset digits: test_ddgan.py names FID statistics only for cifar10, "
                                        "celeba_256, lsun; give --real_img_dir"):
        sample.fid_reference(_fid_args(), "digits", 16)
    with pytest.raises(UserError, match=r"^pytorch_fid/celeba_256_stat.npy: no such file \(test_ddgan.py's FID "
                                        r"statistics for --dataset celeba_256\)"):
        sample.fid_reference(_fid_args(), "celeba_256", 256)


def test_ddgan_sample_refuses_before_sampling(stats_cwd, monkeypatch, capsys):
    """The command line: --dataset lsun at 32 px meets the 256 px statistics, one line, no samples."""
    from ddgan import sample, script_util
    from trainkit import run

    o = vars(script_util.add_model_args(run.ArgumentParser()).parse_args(TINY))
    torch.save(script_util.build_generator(o).state_dict(), stats_cwd / "netG_0.pth")
    before = sorted(os.listdir(stats_cwd))
    code, err = main_in_process(sample, ["--model_path", "netG_0.pth", *TINY, "--dataset", "lsun", "--compute_fid",
                                         "--num_samples", 2], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "pytorch_fid/lsun_church_stat.npy: reference of 256x256 images, but --image_size is 32" in lines[0]
    assert sorted(os.listdir(stats_cwd)) == before


# --- LSUN: train_ddgan.py's Subset(range(0, 120000)) ----------------------------------------

@pytest.fixture
def lsun_lmdb(tmp_path):
    """church_outdoor_train_lmdb in LSUN's layout: PNG values under hash-like keys; {key: image}."""
    lmdb = pytest.importorskip("lmdb")
    where = tmp_path / "church_outdoor_train_lmdb"
    rng = np.random.default_rng(3)
    images = {}
    env = lmdb.open(str(where), map_size=2**24)
    with env.begin(write=True) as txn:
        for i in range(7):
            key = f"{rng.integers(0, 2**32):08x}{i}".encode()
            images[key] = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(images[key]).save(buf, format="PNG")
            txn.put(key, buf.getvalue())
    env.close()
    return where, images


def test_lsun_subset_is_the_first_images_in_key_order(lsun_lmdb):
    from ddgan import train

    where, images = lsun_lmdb
    full = data.load_dataset(str(where), 64)
    expected = np.stack([images[k] for k in sorted(images)]).transpose(0, 3, 1, 2)
    subset, line = train.reference_subset(full, "lsun", size=5)
    assert len(subset) == 5 and np.array_equal(subset.images.numpy(), expected[:5])
    assert line == f"--dataset lsun: the first 5 of 7 images of {where}, as the reference"
    assert train.reference_subset(full, "lsun", size=7)[0] is full
    assert train.reference_subset(full, "celeba_256", size=5) == (full, None)
    assert train.LSUN_SUBSET == 120000


def test_ddgan_train_lsun_uses_the_subset(lsun_lmdb, tmp_path, monkeypatch, capsys):
    from ddgan import train

    where, _ = lsun_lmdb
    monkeypatch.setattr(train, "LSUN_SUBSET", 4)
    code, err = main_in_process(train, ["--dataset", "lsun", "--image_size", 64, "--data_dir", where, *TINY,
                                        "--batch_size", 4, "--max_steps", 1, "--logdir", tmp_path / "run"],
                                monkeypatch, capsys)
    assert code == 0, err
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "the first 4 of 7 images" in log and "4 images, 1 steps per epoch" in log


def test_lsun_flag_file_is_the_readme_command():
    """flags/ddgan/lsun_church.sh holds the NVlabs README's LSUN Church 256 training flags."""
    import shlex
    import subprocess

    from ddgan import train

    out = subprocess.run(["bash", "-c", 'source "$1"; echo "$MODEL_FLAGS $DIFFUSION_FLAGS $TRAIN_FLAGS"', "bash",
                          str(helpers.ROOT / "flags" / "ddgan" / "lsun_church.sh")],
                         capture_output=True, text=True, check=True).stdout
    o = vars(train.create_parser().parse_args(shlex.split(out)))
    readme = dict(dataset="lsun", image_size=256, exp="ddgan_lsun_exp1", num_channels=3, num_channels_dae=64,
                  ch_mult=[1, 1, 2, 2, 4, 4], num_timesteps=4, num_res_blocks=2, batch_size=8, num_epoch=500, ngf=64,
                  embedding_type="positional", use_ema=True, ema_decay=0.999, r1_gamma=1.0, z_emb_dim=256,
                  lr_d=1e-4, lr_g=1.6e-4, lazy_reg=10, save_content=True)
    assert {k: o[k] for k in readme} == readme
