"""npz <-> image folder <-> grid converters, from the command line and in-process."""

import os

import numpy as np
import pytest
from PIL import Image

import helpers
from _support.entry import exit_code
from evaluations import grid, images_to_npz, npz_to_images


def write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return str(path)


def samples(n=7, h=5, w=6, c=3, labels=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"arr_0": rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)}
    if labels:
        arrays["arr_1"] = rng.integers(0, 10, n).astype(np.int64)
    return arrays


@pytest.mark.parametrize("channels,labels", [(3, True), (1, False), (1, True), (3, False)])
def test_round_trip_is_identical(tmp_path, channels, labels):
    arrays = samples(c=channels, labels=labels, n=12)
    src = write_npz(tmp_path / "in.npz", arrays)
    npz_to_images.main([src, str(tmp_path / "imgs")])
    names = sorted(os.listdir(tmp_path / "imgs"))
    assert len(names) == 12
    if labels:
        assert names[0].endswith("_000000.png") or "_0000" in names[0]
        assert f"{arrays['arr_1'][3]}_000003.png" in names
    else:
        assert names[:2] == ["000000.png", "000001.png"]
    images_to_npz.main([str(tmp_path / "imgs"), str(tmp_path / "out.npz")])
    with np.load(tmp_path / "out.npz") as z:
        assert sorted(z.files) == sorted(arrays)
        for k in arrays:
            assert z[k].dtype == arrays[k].dtype and z[k].shape == arrays[k].shape
            assert z[k].tobytes() == arrays[k].tobytes()


def test_images_to_npz_into_folder_uses_samples_name(tmp_path):
    src = write_npz(tmp_path / "in.npz", samples(n=3, labels=False))
    npz_to_images.main([src, str(tmp_path / "imgs")])
    (tmp_path / "outdir").mkdir()
    images_to_npz.main([str(tmp_path / "imgs"), str(tmp_path / "outdir")])
    assert os.listdir(tmp_path / "outdir") == ["samples_3x5x6x3.npz"]


def test_grid(tmp_path):
    arrays = samples(n=5, h=4, w=4, c=3)
    src = write_npz(tmp_path / "in.npz", arrays)
    grid.main([src, str(tmp_path / "g.png"), "--nrow", "2", "--num", "5"])
    with Image.open(tmp_path / "g.png") as im:
        g = np.asarray(im)
    # 3 rows x 2 columns of 4 px with 2 px padding around and between
    assert g.shape == (2 + 3 * 6, 2 + 2 * 6, 3)
    np.testing.assert_array_equal(g[2:6, 8:12], arrays["arr_0"][1])
    np.testing.assert_array_equal(g[14:18, 2:6], arrays["arr_0"][4])
    gray = write_npz(tmp_path / "gray.npz", samples(n=4, c=1))
    grid.main([gray, str(tmp_path / "gg.png"), "--nrow", "4"])
    with Image.open(tmp_path / "gg.png") as im:
        assert im.mode == "L" and im.size == (2 + 4 * 8, 2 + 7)  # 6 px wide, 5 px high


BAD_NPZ = {
    "no_arr_0": ({"images": np.zeros((2, 4, 4, 3), np.uint8)}, "no arr_0"),
    "float": ({"arr_0": np.zeros((2, 4, 4, 3), np.float32)}, "uint8"),
    "nchw_shape": ({"arr_0": np.zeros((2, 3, 4, 4), np.uint8)}, "channels"),
    "three_dims": ({"arr_0": np.zeros((2, 4, 4), np.uint8)}, "4 dimensions"),
    "four_channels": ({"arr_0": np.zeros((2, 4, 4, 4), np.uint8)}, "1 or 3 channels"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
@pytest.mark.parametrize("tool", ["npz_to_images", "grid"])
def test_bad_npz_refused(tmp_path, capsys, case, tool):
    arrays, fragment = BAD_NPZ[case]
    src = write_npz(tmp_path / "bad.npz", arrays)
    main = {"npz_to_images": npz_to_images.main, "grid": grid.main}[tool]
    out = tmp_path / ("imgs" if tool == "npz_to_images" else "g.png")
    assert exit_code(main, src, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.npz" in err[0] and fragment in err[0], err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.npz"]  # nothing half-written


def test_bad_folders_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert exit_code(images_to_npz.main, tmp_path / "empty", tmp_path / "o.npz") == 2
    assert "no image files" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (4, 4)).save(mixed / "0_000000.png")
    Image.new("RGB", (5, 4)).save(mixed / "0_000001.png")
    assert exit_code(images_to_npz.main, mixed, tmp_path / "o.npz") == 2
    assert "0_000001.png: image is 5x4" in capsys.readouterr().err
    (mixed / "0_000001.png").write_bytes(b"not a png")
    assert exit_code(images_to_npz.main, mixed, tmp_path / "o.npz") == 2
    assert "0_000001.png: cannot read image" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()
    # an existing non-empty output folder is not overwritten
    src = write_npz(tmp_path / "in.npz", samples(n=2))
    assert exit_code(npz_to_images.main, src, mixed) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_command_line_one_line_error(tmp_path):
    src = write_npz(tmp_path / "bad.npz", {"arr_0": np.zeros((2, 4, 4, 3), np.float64)})
    proc = helpers.py("evaluations.npz_to_images", src, tmp_path / "imgs", env=helpers.test_env(), timeout=300)
    assert proc.returncode == 2, helpers.describe(proc)
    lines = helpers.error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("evaluations.npz_to_images: error:") and "bad.npz" in lines[0]


def test_images_to_npz_never_replaces_an_existing_file(tmp_path, capsys):
    """An existing --out file (or samples npz in the output folder) is refused in one line and
    kept byte for byte."""
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"0_{i}.png")
    out = tmp_path / "out.npz"
    out.write_bytes(b"a user's file")
    assert exit_code(images_to_npz.main, tmp_path / "imgs", out) == 2
    assert out.read_bytes() == b"a user's file"
    (tmp_path / "outdir").mkdir()
    images_to_npz.main([str(tmp_path / "imgs"), str(tmp_path / "outdir")])
    (written,) = (tmp_path / "outdir").glob("samples_*.npz")
    before = written.read_bytes()
    assert exit_code(images_to_npz.main, tmp_path / "imgs", tmp_path / "outdir") == 2
    assert written.read_bytes() == before
    assert "already exists" in capsys.readouterr().err
