"""The node cache of large data sets (trainkit.data): decoded by every rank of a node into one
file, complete or absent under its final name, mapped without a private copy; and
benchmarks/data_scale.py, which measures it on two ranks."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import helpers
from trainkit import data, decode_cache


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
    tmp = decode_cache._new_cache_file(path, expected.nbytes)
    assert os.path.basename(tmp).startswith(".tmp-") and os.path.getsize(tmp) == expected.nbytes

    def image(i):
        seen.append(i)
        return data.load_image(files[i], 8)

    counts, blocks = [], []
    for part in (0, 1):  # what rank 0 and rank 1 each do, one after the other here
        seen = []
        counts.append(decode_cache._decode_share(tmp, shape, image, "images", part, 2, threads=1))
        blocks.append(sorted(seen))
    assert counts == [3, 4] and blocks == [[0, 1, 2], [3, 4, 5, 6]]
    with open(tmp, "rb") as f:
        assert f.read() == expected.tobytes()


def test_one_process_decodes_everything_then_reuses_the_file(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images")
    expected = data.load_dataset(str(folder), 8).images
    _cache(monkeypatch, tmp_path / "cache")
    first = data.load_dataset(str(folder), 8)
    assert first.decode["decoded"] == 7 and first.decode["decoders"] == 1 and not first.decode["reused"]
    path = first.decode["path"]
    assert os.listdir(tmp_path / "cache") == [os.path.basename(path)]
    with open(path, "rb") as f:
        assert f.read() == expected.numpy().tobytes()
    assert torch.equal(first.images, expected)
    again = data.load_dataset(str(folder), 8)
    assert again.decode["reused"] and again.decode["decoded"] == 0
    assert torch.equal(again.images, expected)


def test_the_mapping_is_paged_from_the_file_not_copied(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "images")
    _cache(monkeypatch, tmp_path / "cache")
    d = data.load_dataset(str(folder), 8)
    path = d.decode["path"]
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
    assert left.startswith(f".tmp-{decode_cache._host_label()}+") and f"+{pid}+" in left
    assert os.path.getsize(cache / left) == expected.numel()
    # The next run does not take it for a cache: it decodes everything, gets the right bytes, and
    # removes the leftover, whose writer (pid, reaped above) is gone.
    again = data.load_dataset(str(folder), 8)
    assert again.decode["decoded"] == 7 and not again.decode["reused"]
    assert torch.equal(again.images, expected)
    assert os.listdir(cache) == [os.path.basename(again.decode["path"])]


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: no process has this pid now (until the kernel hands it out again)
    return child.pid


def test_the_next_decode_removes_leftovers_of_dead_writers_only(tmp_path, monkeypatch, capsys):
    folder = _folder(tmp_path / "images")
    expected = data.load_dataset(str(folder), 8).images
    cache = tmp_path / "cache"
    _cache(monkeypatch, cache)
    path = data.load_dataset(str(folder), 8).decode["path"]
    name = os.path.basename(path)
    os.remove(path)  # as if the decode that wrote it had been killed instead
    dead = _dead_pid()
    me = decode_cache._writer_prefix()
    assert me.startswith(".tmp-") and f"+{os.getpid()}+" in me
    here_dead = decode_cache._writer_prefix(dead, start=12345)
    # the dead pid, but on another host, or on a host of the same name with another boot or pid
    # namespace: whether it is alive there cannot be told from here
    other_host = here_dead.replace(decode_cache._host_label(), "elsewhere-node", 1)
    token = decode_cache._machine_token()
    other_machine = here_dead.replace(token, "0" * 8 if token != "0" * 8 else "1" * 8, 1)
    reused = decode_cache._writer_prefix(os.getpid(), start=decode_cache._start_time(os.getpid()) + 1)
    planted = {
        "dead": f"{here_dead}abc_1234{name}",
        "live": f"{me}live5678{name}",  # this process: a decode under way
        "other host": f"{other_host}zz99aa00{name}",
        "other machine": f"{other_machine}qq11ww22{name}",
        "reused pid": f"{reused}rr33tt44{name}",
        "old format": f".tmp-k3j_9x0q{name}",
        "another cache": f"{here_dead}abc_1234trainkit-images-0123-1x3x8x8.u8",
    }
    rng = np.random.default_rng(1)
    contents = {}
    for label, planted_name in planted.items():
        contents[label] = rng.integers(0, 256, expected.numel() if label == "dead" else 100, dtype=np.uint8).tobytes()
        (cache / planted_name).write_bytes(contents[label])
    capsys.readouterr()

    again = data.load_dataset(str(folder), 8)
    err = capsys.readouterr().err
    assert again.decode["decoded"] == 7 and not again.decode["reused"] and again.decode["path"] == path
    assert torch.equal(again.images, expected)
    with open(path, "rb") as f:
        assert f.read() == expected.numpy().tobytes()  # complete, and equal to a one-process decode
    left = set(os.listdir(cache))
    assert planted["dead"] not in left
    assert left == {name} | {n for label, n in planted.items() if label != "dead"}
    for label, planted_name in planted.items():
        if label != "dead":
            assert (cache / planted_name).read_bytes() == contents[label], label  # kept byte for byte
    removed = [line for line in err.splitlines() if line.startswith("trainkit.data: removed ")]
    size = f"{expected.numel() / 2**20:.1f} MiB"
    assert removed == [f"trainkit.data: removed {cache / planted['dead']} ({size}): a leftover of a killed decode "
                       f"(pid {dead} on {decode_cache._host_label()} is gone)"]
    assert f"kept {cache / planted['reused pid']}: pid {os.getpid()} is now another process" in err
    (old,) = [line for line in err.splitlines() if "named without a writer's pid" in line]
    assert planted["old format"] in old and "deleted by hand when no job is running" in old
    for label in ("live", "other host", "other machine", "another cache"):
        assert planted[label] not in err, label  # kept without a word: not this sweep's business


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
