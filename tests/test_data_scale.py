"""The node cache of large data sets (trainkit.data): decoded by every rank of a node into one
file, complete or absent under its final name, mapped without a private copy; and
benchmarks/data_scale.py, which measures it on two ranks."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

import helpers
from trainkit import data


def _folder(root, n=7):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(root / f"{i % 2}_{i}.png")
    return root


def _cache(monkeypatch, where):
    monkeypatch.setenv(data.CACHE_ENV, str(where))
    monkeypatch.setenv(data.CACHE_MB_ENV, "0")  # every data set counts as large


def test_two_decoders_fill_disjoint_blocks_equal_to_a_one_process_decode(tmp_path):
    folder = _folder(tmp_path / "images")
    expected = data.load_dataset(str(folder), 8).images.numpy()  # in memory, one process
    files = data.list_image_files(str(folder))
    shape, path = expected.shape, str(tmp_path / "cache" / "images.u8")
    tmp = data._new_cache_file(path, expected.nbytes)
    assert os.path.basename(tmp).startswith(".tmp-") and os.path.getsize(tmp) == expected.nbytes

    def image(i):
        seen.append(i)
        return data.load_image(files[i], 8)

    counts, blocks = [], []
    for part in (0, 1):  # what rank 0 and rank 1 each do, one after the other here
        seen = []
        counts.append(data._decode_share(tmp, shape, image, "images", part, 2, threads=1))
        blocks.append(sorted(seen))
    assert counts == [3, 4] and blocks == [[0, 1, 2], [3, 4, 5, 6]]
    with open(tmp, "rb") as f:
        assert f.read() == expected.tobytes()


def test_one_process_decodes_everything_then_reuses_the_file(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images")
    expected = data.load_dataset(str(folder), 8).images
    _cache(monkeypatch, tmp_path / "cache")
    first = data.load_dataset(str(folder), 8)
    assert data.last_decode["decoded"] == 7 and data.last_decode["decoders"] == 1 and not data.last_decode["reused"]
    path = data.last_decode["path"]
    assert os.listdir(tmp_path / "cache") == [os.path.basename(path)]
    with open(path, "rb") as f:
        assert f.read() == expected.numpy().tobytes()
    assert torch.equal(first.images, expected)
    again = data.load_dataset(str(folder), 8)
    assert data.last_decode["reused"] and data.last_decode["decoded"] == 0
    assert torch.equal(again.images, expected)


def test_the_mapping_is_paged_from_the_file_not_copied(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images")
    _cache(monkeypatch, tmp_path / "cache")
    d = data.load_dataset(str(folder), 8)
    path = data.last_decode["path"]
    with open("/proc/self/maps") as f:
        maps = [line.split() for line in f if line.rstrip().endswith(path)]
    # one private (copy-on-write, never written) mapping of the whole file
    assert len(maps) == 1 and maps[0][1].startswith("r") and maps[0][1].endswith("p"), maps
    start, end = (int(x, 16) for x in maps[0][0].split("-"))
    assert start <= d.images.data_ptr() < end
    x, _ = next(data.Batches(d, 2, seed=0, random_flip=True))
    assert x.shape == (2, 3, 8, 8) and not (start <= x.data_ptr() < end)  # a batch is a copy; the set is not
    assert d.images.data_ptr() == start  # nothing replaced the mapping


def test_an_interrupted_decode_leaves_no_file_taken_as_complete(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images")
    expected = data.load_dataset(str(folder), 8).images
    cache = tmp_path / "cache"
    _cache(monkeypatch, cache)
    # An exception midway (a bug, ^C): the temporary file goes with it.
    real = data.load_image

    def failing(path, *a):
        if path.endswith("_4.png"):
            raise KeyboardInterrupt
        return real(path, *a)

    with monkeypatch.context() as m:
        m.setattr(data, "load_image", failing)
        with pytest.raises(KeyboardInterrupt):
            data.load_dataset(str(folder), 8)
    assert os.listdir(cache) == []
    # kill -9 midway: nothing can clean up; a file of the full size is left, under a temporary name.
    # A forked child (the code is imported already) decodes and kills itself at image 4.
    def dying(path, *a):
        if path.endswith("_4.png"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, *a)

    pid = os.fork()
    if pid == 0:
        try:
            data.load_image = dying
            data.load_dataset(str(folder), 8)
        finally:
            os._exit(3)  # never back into pytest; reached only if the kill did not happen
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    (left,) = os.listdir(cache)
    assert left.startswith(".tmp-") and os.path.getsize(cache / left) == expected.numel()
    # The next run ignores it, decodes everything and gets the right bytes.
    again = data.load_dataset(str(folder), 8)
    assert data.last_decode["decoded"] == 7 and not data.last_decode["reused"]
    assert torch.equal(again.images, expected)
    assert sorted(os.listdir(cache)) == sorted([left, os.path.basename(data.last_decode["path"])])


def test_decoders_env_must_be_a_whole_number(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images")
    _cache(monkeypatch, tmp_path / "cache")
    monkeypatch.setenv(data.DECODERS_ENV, "two")
    with pytest.raises(data.UserError, match=r"\$TRAINKIT_DATA_DECODERS: 'two' is not a whole number"):
        data.load_dataset(str(folder), 8)
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []


@pytest.mark.slow
def test_benchmark_two_ranks_both_decode_and_the_second_run_reuses(tmp_path):
    out = tmp_path / "rows.json"
    proc = helpers.script("benchmarks/data_scale.py", "--sizes", "256", "--sources", "folder,lmdb", "--image_size",
                          "8", "--steps", "3", "--batch_size", "8", "--work", tmp_path, "--keep", "--json", out,
                          timeout=400)
    assert proc.returncode == 0, helpers.describe(proc)
    assert "256 folder: start-up 1 decoder / 2 decoders = " in proc.stdout
    rows = {(r["source"], r["run"]): r for r in json.loads(out.read_text())["rows"]}
    (work,) = tmp_path.glob("data_scale-*")
    expected = data.load_dataset(str(work / "folder-256"), 8).images.numpy().tobytes()
    for source in ("folder", "lmdb"):
        one, two, reuse = (rows[source, run] for run in ("1 decoder", "2 decoders", "reuse"))
        assert one["decoded"] == [256, 0] and two["decoded"] == [128, 128] and reuse["decoded"] == [0, 0]
        assert reuse["reused"] and not two["reused"] and reuse["cache"] == two["cache"]
        for r in (one, two):
            with open(r["cache"], "rb") as f:
                assert f.read() == expected, (source, r["run"])
        assert not [n for n in os.listdir(os.path.dirname(two["cache"])) if n.startswith(".tmp-")]
