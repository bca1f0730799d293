"""LMDB data sets in DDGAN's layout (root/train.lmdb, key str(i), raw RGB or encoded values) and
LSUN's (encoded values under arbitrary keys): datasets/lmdb_export.py writes them from an image
folder, trainkit.data reads them back to the folder's bytes, and a run trains to the same weights
from either. Also: the progress bars of start-up decoding and of the exports, and --help of every
datasets/*.py script."""

import argparse
import importlib
import io
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import helpers
from _support.entry import main_in_process
from trainkit import checkpoint, data, dist
from trainkit import images as trainkit_images
from trainkit.errors import UserError

lmdb = pytest.importorskip("lmdb")
lmdb_export = importlib.import_module("lmdb_export")

SIDE = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """16 RGB PNGs of 16 x 16, names chosen so that sorted order is not numeric, one subfolder."""
    root = tmp_path_factory.mktemp("images")
    (root / "more").mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        where = root / "more" if i % 5 == 0 else root
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(where / f"{i}_img.png")
    return root


def export(src, out, *flags, capsys=None):
    """Run datasets/lmdb_export.py in-process: (exit code, stderr)."""
    try:
        lmdb_export.main([str(src), "--out", str(out), *map(str, flags)])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err if capsys is not None else ""


@pytest.fixture(scope="module")
def exported(folder, tmp_path_factory):
    """{format: OUT folder holding train.lmdb} for both value formats."""
    out = {}
    for fmt in ("encoded", "raw"):
        out[fmt] = tmp_path_factory.mktemp(f"lmdb_{fmt}")
        assert export(folder, out[fmt], "--format", fmt) == (0, "")
    return out


def values(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        got = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    return got


@pytest.mark.parametrize("fmt", ["encoded", "raw"])
def test_export_writes_ddgan_layout_in_folder_order(fmt, folder, exported):
    files = data.list_image_files(str(folder))
    stored = values(exported[fmt] / "train.lmdb")
    assert sorted(stored) == sorted(str(i).encode() for i in range(16))
    assert os.listdir(exported[fmt]) == ["train.lmdb"]  # no temporary folder left beside it
    for i, path in enumerate(files):
        value = stored[str(i).encode()]
        if fmt == "encoded":  # the file's own bytes
            assert value == open(path, "rb").read()
        else:  # DDGAN's reading: uint8 RGB of a square, side sqrt(len / 3)
            side = int(np.sqrt(len(value) / 3))
            pixels = np.frombuffer(value, np.uint8).reshape(side, side, 3)
            np.testing.assert_array_equal(pixels, np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("fmt", ["encoded", "raw"])
def test_lmdb_decodes_to_the_folder_bytes(fmt, folder, exported):
    from_folder = data.load_dataset(str(folder), SIDE)
    for data_dir in (exported[fmt], exported[fmt] / "train.lmdb"):  # DDGAN's --datadir, or the LMDB itself
        d = data.load_dataset(str(data_dir), SIDE)
        assert d.images.dtype == torch.uint8 and torch.equal(d.images, from_folder.images)
        assert d.labels is None and d.num_classes == 0 and d.source == str(data_dir)
    # resized and grey, the same path as the folder's
    for size, channels in ((8, 3), (12, 1)):
        assert torch.equal(data.load_dataset(str(exported[fmt]), size, channels=channels).images,
                           data.load_dataset(str(folder), size, channels=channels).images)


def test_lmdb_through_the_node_cache_file(exported, folder, tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(data.CACHE_MB_ENV, "0")  # every data set counts as large
    cached = data.load_dataset(str(exported["raw"]), SIDE)
    (name,) = os.listdir(tmp_path / "cache")
    assert name.endswith("-16x3x16x16.u8")
    monkeypatch.delenv(data.CACHE_MB_ENV)
    assert torch.equal(cached.images, data.load_dataset(str(folder), SIDE).images)


def test_lsun_layout_arbitrary_keys_in_byte_order(tmp_path):
    """torchvision's LSUN: CLASS_lmdb/ with data.mdb, encoded images (here WebP and JPEG-free PNG)
    under hash-like keys; image i is the i-th key in byte order (LMDB's cursor order)."""
    where = tmp_path / "bedroom_train_lmdb"
    rng = np.random.default_rng(1)
    images = {}
    env = lmdb.open(str(where), map_size=2**24)
    with env.begin(write=True) as txn:
        for i in range(5):
            key = f"{rng.integers(0, 2**32):08x}{i}".encode()
            images[key] = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)  # not square: encoded only
            buf = io.BytesIO()
            Image.fromarray(images[key]).save(buf, format="WEBP" if i % 2 else "PNG", lossless=True)
            txn.put(key, buf.getvalue())
    env.close()
    d = data.load_dataset(str(where), 16)
    expected = [data.center_crop_resize(Image.fromarray(images[k]), 16) for k in sorted(images)]
    assert torch.equal(d.images, torch.from_numpy(np.stack([np.asarray(e) for e in expected])).permute(0, 3, 1, 2))


def test_key_order_rule():
    ddgan = [str(i).encode() for i in range(12)]
    assert data.lmdb_order(sorted(ddgan)) == ddgan  # b"10" sorts before b"2"; the index decides
    assert data.lmdb_order([b"2", b"10", b"0"]) == [b"0", b"10", b"2"]  # not 0..N-1: byte order
    assert data.lmdb_order([b"00", b"1"]) == [b"00", b"1"]


def _gans_argv(data_dir, logdir):
    return ["--model", "dcgan", "--data_dir", data_dir, "--image_size", SIDE, "--num_channels", 3, "--nz", 4,
            "--ngf", 4, "--ndf", 4, "--batch_size", 4, "--max_steps", 2, "--save_interval", 2, "--log_interval", 1,
            "--seed", 7, "--random_flip", True, "--logdir", logdir]


def test_training_from_lmdb_gives_the_same_weights_as_from_the_folder(folder, exported, tmp_path, monkeypatch,
                                                                      capsys):
    from gans import train

    runs = {}
    # the encoded format decodes to the same bytes too (test_lmdb_decodes_to_the_folder_bytes); one run is enough
    for name, data_dir in (("folder", folder), ("raw", exported["raw"])):
        code, err = main_in_process(train, _gans_argv(data_dir, tmp_path / name), monkeypatch, capsys)
        assert code == 0, err
        runs[name] = checkpoint.latest(str(tmp_path / name))
        assert runs[name].step == 2
    for kind in ("model", "disc", "opt", "disc_opt"):
        ref = runs["folder"].load(kind)
        for name in ("raw",):
            other = runs[name].load(kind)
            flat_ref, flat_other = _tensors(ref), _tensors(other)
            assert flat_ref.keys() == flat_other.keys() and flat_ref
            for key in flat_ref:
                assert torch.equal(flat_ref[key], flat_other[key]), (kind, name, key)


def _tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}/{i}"))
        return out
    return {}


def _not_an_lmdb(tmp_path):
    cases = {}
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "data.mdb").write_bytes(b"not an lmdb file " * 512)
    cases["garbage"] = (garbage, f"{garbage}: not an LMDB database")
    empty_file = tmp_path / "emptyfile"
    empty_file.mkdir()
    (empty_file / "train.lmdb").write_bytes(b"")
    cases["empty train.lmdb file"] = (empty_file, f"{empty_file / 'train.lmdb'}: not an LMDB database")
    no_data = tmp_path / "nodata.lmdb"
    no_data.mkdir()
    cases["*.lmdb without data.mdb"] = (no_data, f"{no_data}: not an LMDB database (no data.mdb")
    empty_db = tmp_path / "emptydb"
    lmdb.open(str(empty_db), map_size=2**20).close()
    cases["no entries"] = (empty_db, f"{empty_db}: the LMDB database holds no images")
    bad_value = tmp_path / "badvalue"
    env = lmdb.open(str(bad_value), map_size=2**20)
    with env.begin(write=True) as txn:
        txn.put(b"0", np.zeros((4, 4, 3), np.uint8).tobytes())
        txn.put(b"1", b"\x89PNG but truncated")
    env.close()
    cases["bad value"] = (bad_value, f"{bad_value}: key '1': neither an encoded image nor raw RGB bytes")
    return cases


def test_not_an_lmdb_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    from gans import train

    for case, (data_dir, message) in _not_an_lmdb(tmp_path).items():
        with pytest.raises(UserError) as e:
            data.load_dataset(str(data_dir), SIDE)
        assert str(e.value).startswith(message) and "\n" not in str(e.value), (case, str(e.value))
        code, err = main_in_process(train, _gans_argv(data_dir, tmp_path / f"run_{case}"), monkeypatch, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"gans.train: error: {message}"), (case, err)


def test_an_lmdb_has_no_labels_for_a_conditional_model(exported):
    with pytest.raises(UserError, match="an LMDB data set has no labels"):
        data.load_dataset(str(exported["encoded"]), SIDE, class_cond=True)


def test_missing_lmdb_package_is_one_line(exported, folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lmdb", None)  # `import lmdb` now raises ImportError
    with pytest.raises(UserError) as e:
        data.load_dataset(str(exported["raw"]), SIDE)
    assert str(e.value) == f"{exported['raw'] / 'train.lmdb'}: reading an LMDB needs the lmdb package: " \
                           'pip install -e ".[lmdb]"'
    code, err = export(folder, tmp_path / "out", capsys=capsys)
    (line,) = err.strip().splitlines()
    assert code == 2 and line.endswith(': error: writing an LMDB needs the lmdb package: pip install -e ".[lmdb]"')
    assert not (tmp_path / "out").exists()
    assert data.load_dataset(str(folder), SIDE).images.shape == (16, 3, SIDE, SIDE)  # folders need no lmdb


def test_export_bad_input_writes_nothing(folder, tmp_path, capsys):
    uneven = tmp_path / "uneven"
    uneven.mkdir()
    Image.new("RGB", (20, 12)).save(uneven / "a.png")
    code, err = export(uneven, tmp_path / "o1", "--format", "raw", capsys=capsys)
    assert code == 2 and f"{uneven / 'a.png'}: 20x12 is not square" in err.strip().splitlines()[-1]
    assert not (tmp_path / "o1" / "train.lmdb").exists() and os.listdir(tmp_path / "o1") == []
    # with --size it is resized and centre-cropped, as the loader would
    assert export(uneven, tmp_path / "o2", "--format", "raw", "--size", 8, "--split", "validation")[0] == 0
    (value,) = values(tmp_path / "o2" / "validation.lmdb").values()
    assert len(value) == 8 * 8 * 3
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    Image.new("RGB", (8, 8)).save(corrupt / "a.png")
    (corrupt / "b.png").write_bytes(b"not a png")
    code, err = export(corrupt, tmp_path / "o3", capsys=capsys)
    assert code == 2 and f"{corrupt / 'b.png'}: cannot read image" in err.strip().splitlines()[-1]
    assert os.listdir(tmp_path / "o3") == []
    code, err = export(folder, tmp_path / "o2", "--format", "raw", "--split", "validation", capsys=capsys)
    assert code == 2 and err.endswith(f": error: {tmp_path / 'o2' / 'validation.lmdb'}: exists; remove it or "
                                      "choose another --out\n") and err.count("\n") == 1, err
    code, err = export(tmp_path / "nowhere", tmp_path / "o4", capsys=capsys)
    assert code == 2 and err.endswith(f": error: {tmp_path / 'nowhere'}: no such folder\n") and err.count("\n") == 1


def test_decoding_progress_bar_on_rank_0_above_the_threshold(exported, folder, monkeypatch, capsys):
    capsys.readouterr()
    data.load_dataset(str(folder), SIDE)  # 16 images, under the default threshold: no bar
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(trainkit_images, "PROGRESS_MIN_IMAGES", 10)  # the decoding threads read it there
    for data_dir in (folder, exported["raw"]):
        data.load_dataset(str(data_dir), SIDE)
        err = capsys.readouterr().err
        assert f"decoding {data_dir}" in err and "16/16" in err and "100%" in err, err
    monkeypatch.setattr(dist, "rank", lambda: 1)
    data.load_dataset(str(folder), SIDE)
    assert capsys.readouterr().err == ""


def test_exports_show_progress(folder, tmp_path, capsys):
    capsys.readouterr()
    assert export(folder, tmp_path / "lmdb")[0] == 0
    err = capsys.readouterr().err
    assert f"writing {tmp_path / 'lmdb' / 'train.lmdb'}" in err and "16/16" in err, err
    image_folder = importlib.import_module("image_folder")
    image_folder.main([str(folder), "--out", str(tmp_path / "folders"), "--size", "8"])
    err = capsys.readouterr().err
    assert f"writing {tmp_path / 'folders' / 'train'}" in err and "16/16" in err, err


SCRIPTS = sorted(n[:-3] for n in os.listdir(helpers.ROOT / "datasets") if n.endswith(".py") and n != "dataset_tools.py")


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_dataset_flag_has_help_and_shows_its_default(name, monkeypatch, capsys):
    parsers = []

    def stop(self, *a, **k):
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    with pytest.raises(SystemExit):
        importlib.import_module(name).main([])
    (p,) = parsers
    text = p.format_help()
    for action in p._actions:
        assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        # run.HelpFormatter: an empty default, or a help line that speaks of its default, gets no suffix
        shown = action.default not in (None, "", argparse.SUPPRESS) and "default" not in action.help.lower()
        if action.option_strings and shown:
            assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)
