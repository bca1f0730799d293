"""Single-process behaviour of each trainkit module: numbers, files written and read back, errors."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from trainkit import checkpoint, data, ema, fileio, logger, npz, precision, run, sampling
from trainkit.errors import UserError

# --- logger -----------------------------------------------------------------------------

def test_logger_writes_table_csv_and_jsonl(tmp_path, capsys):
    log = logger.Logger(str(tmp_path))
    log.logkv_mean("loss", 1.0)
    log.logkv_mean("loss", 3.0)
    log.logkv("step", 1)
    row = log.dumpkvs()
    assert row == {"loss": 2.0, "step": 1}
    log.logkv("step", 2)
    log.logkv("lr", 0.5)  # a new column: older rows are padded
    log.dumpkvs()
    log.log("hello")
    log.close()
    out = capsys.readouterr().out
    assert "| loss | 2        |" in out and "hello" in out
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    assert lines[0].split(",") == ["loss", "step", "lr"]
    assert lines[1].split(",") == ["2.0", "1", ""]
    assert lines[2].split(",") == ["", "2", "0.5"]
    stats = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert stats == [{"loss": 2.0, "step": 1}, {"step": 2, "lr": 0.5}]
    assert "hello" in (tmp_path / "log.txt").read_text()
    rows = logger.read_progress(str(tmp_path))
    assert rows[0] == {"loss": 2.0, "step": 1.0} and rows[1] == {"step": 2.0, "lr": 0.5}


def test_logger_resume_keeps_columns(tmp_path):
    a = logger.Logger(str(tmp_path), stdout=False)
    a.logkv("step", 1)
    a.logkv("loss", 0.5)
    a.dumpkvs()
    a.close()
    b = logger.Logger(str(tmp_path), stdout=False)
    b.logkv("step", 2)
    b.logkv("loss", 0.25)
    b.dumpkvs()
    b.close()
    assert (tmp_path / "progress.csv").read_text().splitlines() == ["loss,step", "0.5,1", "0.25,2"]


# --- checkpoint -------------------------------------------------------------------------

def _write_steps(run_dir, steps):
    for s in steps:
        checkpoint.save(str(run_dir), s, {"model": {"w": torch.full((3,), float(s))}, "opt": {"lr": 0.1}},
                        {"data": {"batches": s}})


def test_checkpoint_names_latest_and_reload(tmp_path):
    _write_steps(tmp_path, [10, 20])
    names = sorted(os.listdir(tmp_path))
    assert names == ["model000010.pt", "model000020.pt", "opt000010.pt", "opt000020.pt", "state000010.pt",
                     "state000020.pt"]
    ck = checkpoint.latest(str(tmp_path))
    assert ck.step == 20 and ck.state["data"] == {"batches": 20}
    assert torch.equal(ck.load("model")["w"], torch.full((3,), 20.0))
    assert checkpoint.resolve(str(tmp_path / "model000010.pt")).step == 10
    assert checkpoint.resolve(str(tmp_path)).step == 20
    assert not any(n.startswith(".tmp") for n in os.listdir(tmp_path))


@pytest.mark.parametrize("victim", ["model000020.pt", "state000020.pt", "opt000020.pt"])
def test_truncated_newest_checkpoint_falls_back(tmp_path, victim):
    _write_steps(tmp_path, [10, 20])
    path = tmp_path / victim
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert checkpoint.latest(str(tmp_path)).step == 10
    with pytest.raises(UserError, match="incomplete or corrupt|not a readable checkpoint"):
        ck = checkpoint.resolve(str(tmp_path / "model000020.pt"))
        ck.load("model")


def test_missing_file_of_newest_step_falls_back(tmp_path):
    _write_steps(tmp_path, [10, 20])
    os.remove(tmp_path / "opt000020.pt")
    assert checkpoint.latest(str(tmp_path)).step == 10


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_payload_is_refused(tmp_path):
    path = tmp_path / "model000001.pt"
    torch.save({"x": _Evil()}, str(path))
    with pytest.raises(UserError) as e:
        checkpoint.load(str(path))
    msg = str(e.value)
    assert str(path) in msg and "would run code" in msg and "\n" not in msg


def test_garbage_and_missing_checkpoints_name_the_file(tmp_path):
    junk = tmp_path / "model000005.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match=f"{junk}: not a readable checkpoint"):
        checkpoint.load(str(junk))
    with pytest.raises(UserError, match="no such checkpoint"):
        checkpoint.resolve(str(tmp_path / "nope.pt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no complete checkpoint"):
        checkpoint.resolve(str(empty))


def test_openai_style_directory_without_state_file(tmp_path):
    torch.save({"w": torch.ones(2)}, str(tmp_path / "model000300.pt"))
    torch.save({"w": torch.zeros(2)}, str(tmp_path / "ema_0.9999_000300.pt"))
    ck = checkpoint.resolve(str(tmp_path / "model000300.pt"))
    assert ck.step == 300 and ck.state is None
    assert ck.prefixes() == ["ema_0.9999_", "model"]


# --- ema --------------------------------------------------------------------------------

def test_ema_matches_closed_form_and_loads_into_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    e = ema.EMA(model, "0.9,0.5")
    w0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    e.update(model)
    w1 = model[0].weight.detach()
    sd = e.state_dict(0.9, model)
    torch.testing.assert_close(sd["0.weight"], 0.9 * w0 + 0.1 * w1)
    torch.testing.assert_close(e.state_dict(0.5, model)["0.weight"], 0.5 * w0 + 0.5 * w1)
    assert set(sd) == set(model.state_dict())  # buffers included: loads strictly
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    fresh.load_state_dict(sd, strict=True)
    e2 = ema.EMA(fresh, [0.9])
    e2.load_state_dict(0.9, sd)
    torch.testing.assert_close(e2.state_dict(0.9, fresh)["0.weight"], sd["0.weight"])


@pytest.mark.parametrize("bad", ["abc", "1.5", "0.9,-1"])
def test_ema_rate_errors(bad):
    with pytest.raises(UserError, match="--ema_rate"):
        ema.parse_rates(bad)


def test_ema_rate_names_match_openai_files():
    assert [ema.rate_name(r) for r in ema.parse_rates("0.9999,0.999")] == ["0.9999", "0.999"]


# --- data -------------------------------------------------------------------------------

def _png(path, size, value=128, mode="RGB"):
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)


def test_center_crop_resize_follows_openai():
    # 80x40 with target 10: halved (BOX) to 40x20 and 20x10, then centre crop 10x10.
    img = Image.fromarray(np.tile(np.arange(80, dtype=np.uint8), (40, 1)))
    out = data.center_crop_resize(img, 10)
    assert out.size == (10, 10)
    expect = img.resize((40, 20), Image.BOX).resize((20, 10), Image.BOX)
    expect = expect.resize((20, 10), Image.BICUBIC).crop((5, 0, 15, 10))
    assert np.array_equal(np.asarray(out), np.asarray(expect))


def test_folder_labels_recursion_and_channels(tmp_path):
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "cat_001.png", (12, 12), 10)
    _png(tmp_path / "sub" / "dog_002.jpg", (12, 12), 250)
    _png(tmp_path / "cat_003.gif", (24, 24), 100, mode="L")
    (tmp_path / "notes.txt").write_text("ignored")
    d = data.load_dataset(str(tmp_path), 8, class_cond=True)
    assert d.images.shape == (3, 3, 8, 8) and d.images.dtype == torch.uint8
    assert d.classes == ["cat", "dog"] and d.labels.tolist() == [0, 0, 1]
    gray = data.load_dataset(str(tmp_path), 8, channels=1)
    assert gray.images.shape == (3, 1, 8, 8) and gray.labels is None


def test_batches_are_disjoint_and_complete_over_ranks_and_resume_exactly(tmp_path):
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 2, 2).contiguous()
    d = data.ImageData(images, None, "mem")
    world, bs = 2, 3
    per_rank = [data.Batches(d, bs, seed=7, rank=r, world=world) for r in range(world)]
    assert per_rank[0].batches_per_epoch == 3
    for k in range(3):  # one epoch: 3 global batches of 6 out of 20 images
        parts = [b.indices(k).tolist() for b in per_rank]
        assert len(set(parts[0]) & set(parts[1])) == 0
    epoch = sum((b.indices(k).tolist() for b in per_rank for k in range(3)), [])
    assert len(epoch) == len(set(epoch)) == 18
    assert sorted(data.shard(10, 0, 3) + data.shard(10, 1, 3) + data.shard(10, 2, 3)) == list(range(10))
    # resume: a fresh iterator at the saved position yields the same batches
    a = data.Batches(d, bs, seed=7, random_flip=True)
    for _ in range(4):
        next(a)
    state = a.state_dict()
    expected = [next(a)[0] for _ in range(5)]
    b = data.Batches(d, bs, seed=7, random_flip=True)
    b.load_state_dict(state)
    for x in expected:
        assert torch.equal(next(b)[0], x)
    x, _ = next(data.Batches(d, bs, seed=1))
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32


def test_data_errors_name_the_input(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'missing'}: no such data directory"):
        data.load_dataset(str(tmp_path / "missing"), 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images"):
        data.load_dataset(str(empty), 8)
    bad = tmp_path / "bad"
    bad.mkdir()
    _png(bad / "0_good.png", (8, 8))
    good_bytes = (bad / "0_good.png").read_bytes()
    (bad / "1_broken.png").write_bytes(good_bytes[: len(good_bytes) // 2])
    with pytest.raises(UserError, match="1_broken.png: cannot read image"):
        data.load_dataset(str(bad), 8)
    few = data.ImageData(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), None, "tiny_dir")
    with pytest.raises(UserError, match="tiny_dir: 3 images, fewer than one global batch of 4"):
        data.Batches(few, 2, rank=0, world=2)


def _image_folder(root, n=6, size=(12, 10)):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / f"{i % 2}_{i}.png")
    return root


def test_large_folders_are_decoded_once_into_a_mapped_cache_file(tmp_path, monkeypatch):
    folder = _image_folder(tmp_path / "images")
    in_memory = data.load_dataset(str(folder), 8, class_cond=True)
    cache = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_ENV, str(cache))
    monkeypatch.setenv(data.CACHE_MB_ENV, "0")  # every folder counts as large
    cached = data.load_dataset(str(folder), 8, class_cond=True)
    assert torch.equal(cached.images, in_memory.images) and torch.equal(cached.labels, in_memory.labels)
    (name,) = os.listdir(cache)
    assert name.endswith("-6x3x8x8.u8") and os.path.getsize(cache / name) == 6 * 3 * 8 * 8
    # The next load maps the file without decoding anything.
    with monkeypatch.context() as m:
        m.setattr(data, "load_image", lambda *a: pytest.fail("decoded again"))
        assert torch.equal(data.load_dataset(str(folder), 8).images, in_memory.images)
    # Another resolution or channel count, or an edited image, gets its own file.
    assert data.load_dataset(str(folder), 4, channels=1).images.shape == (6, 1, 4, 4)
    Image.new("RGB", (12, 10), (255, 0, 0)).save(folder / "0_0.png")
    edited = data.load_dataset(str(folder), 8)
    assert (edited.images[0] != in_memory.images[0]).any() and len(os.listdir(cache)) == 3
    # A corrupt image: one error naming it, and nothing written (no cache, no temporary file).
    (folder / "1_9.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="1_9.png: cannot read image"):
        data.load_dataset(str(folder), 8)
    assert len(os.listdir(cache)) == 3
    monkeypatch.setenv(data.CACHE_MB_ENV, "lots")
    with pytest.raises(UserError, match=r"\$TRAINKIT_DATA_CACHE_MB: 'lots' is not a number of MB"):
        data.load_dataset(str(folder), 8)
    monkeypatch.setenv(data.CACHE_MB_ENV, "0")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "file" / "sub"))
    (folder / "1_9.png").unlink()
    with pytest.raises(UserError, match="cannot write here"):
        data.load_dataset(str(folder), 8)


def test_npz_dataset(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    path = npz.write_samples(str(tmp_path), images, labels=[0, 1, 2, 1, 0])
    d = data.load_dataset(path, 4, class_cond=True)
    assert torch.equal(d.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert d.labels.tolist() == [0, 1, 2, 1, 0]
    assert data.load_dataset(path, 8, channels=1).images.shape == (5, 1, 8, 8)


# --- npz --------------------------------------------------------------------------------

def test_samples_npz_round_trip_and_layout(tmp_path):
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    images = npz.to_uint8(x)
    assert images.shape == (2, 2, 2, 3) and images.dtype == np.uint8
    assert images[0, 0, 0].tolist() == [0, 127, 255]
    path = npz.write_samples(str(tmp_path), images, labels=np.array([3, 4]))
    assert os.path.basename(path) == "samples_2x2x2x3.npz"
    with np.load(path) as z:
        assert sorted(z.files) == ["arr_0", "arr_1"] and z["arr_1"].dtype == np.int64
    back, labels = npz.read_samples(path)
    assert np.array_equal(back, images) and labels.tolist() == [3, 4]
    npz.write_stats(str(tmp_path / "s.npz"), np.zeros(3), np.eye(3))
    mu, sigma = npz.read_stats(str(tmp_path / "s.npz"))
    assert mu.dtype == np.float64 and sigma.shape == (3, 3)


@pytest.mark.parametrize("arrays,match", [
    ({"images": np.zeros((1, 2, 2, 3), np.uint8)}, "no arr_0"),
    ({"arr_0": np.zeros((1, 2, 2, 3), np.float32)}, "must be uint8"),
    ({"arr_0": np.zeros((2, 2, 3), np.uint8)}, "4 dimensions"),
    ({"arr_0": np.zeros((1, 3, 4, 4), np.uint8)}, "1 or 3 channels"),
])
def test_bad_samples_npz(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=match) as e:
        npz.read_samples(str(path))
    assert str(path) in str(e.value)


# --- sampling ---------------------------------------------------------------------------

def test_per_sample_random_does_not_depend_on_grouping():
    together = sampling.PerSampleRandom(5, [0, 1, 2, 3]).randn(2, 3)
    apart = torch.cat([sampling.PerSampleRandom(5, [i]).randn(2, 3) for i in [0, 1, 2, 3]])
    assert torch.equal(together, apart)
    assert not torch.equal(together[0], together[1])
    assert not torch.equal(sampling.PerSampleRandom(6, [0]).randn(3), together[0, 0])


def test_sample_to_npz_orders_by_index(tmp_path):
    def fn(rnd, idx):
        return np.full((len(idx), 1, 1, 1), 0, np.uint8) + np.array(idx, np.uint8)[:, None, None, None], np.array(idx)

    path = sampling.sample_to_npz(fn, 7, 3, seed=0, out_dir=str(tmp_path))
    images, labels = npz.read_samples(path)
    assert images[:, 0, 0, 0].tolist() == list(range(7)) and labels.tolist() == list(range(7))



@pytest.mark.parametrize("block, expected", [(1, [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]),
                                             (4, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]),
                                             (2, [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10]])])
def test_rank_indices_deal_out_blocks(block, expected, monkeypatch):
    monkeypatch.setattr(sampling.dist, "world_size", lambda: 3)
    shares = []
    for r in range(3):
        monkeypatch.setattr(sampling.dist, "rank", lambda: r)
        shares.append(sampling.rank_indices(11, block))
    assert shares == expected

# --- precision, fileio, run -------------------------------------------------------------

def test_fp16_skips_overflowing_step_and_lowers_scale():
    p = precision.Precision("fp16", "cpu", init_scale=1024.0)
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    p.backward((w * float("inf")).sum())
    assert p.step(opt) is False
    assert torch.equal(w.detach(), torch.ones(2)) and p.scale == 512.0
    opt.zero_grad()
    p.backward(w.sum())
    assert p.step(opt) is True
    torch.testing.assert_close(w.detach(), torch.full((2,), 0.9))
    restored = precision.Precision("fp16", "cpu")
    restored.load_state_dict(p.state_dict())
    assert restored.scale == 512.0
    with pytest.raises(UserError, match="--precision"):
        precision.Precision("fp8", "cpu")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(str(target)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.bin"]


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    import random

    state = run.rng_state()
    torch.save(state, str(tmp_path / "s.pt"))
    a = (torch.rand(3), np.random.rand(3), random.random())
    run.set_rng_state(checkpoint.load(str(tmp_path / "s.pt")))
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_argument_parser_errors_are_one_line(capsys):
    p = run.ArgumentParser(prog="x")
    p.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--n", "abc"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--n" in err and "abc" in err


def test_atomic_dir_swaps_whole_folders_only(tmp_path):
    out = tmp_path / "out"
    with fileio.atomic_dir(str(out)) as tmp:
        open(os.path.join(tmp, "a.png"), "w").write("x")
        assert not out.exists()  # nothing visible until the folder is complete
    assert os.listdir(out) == ["a.png"]
    with pytest.raises(UserError, match="exists and is not empty"):
        with fileio.atomic_dir(str(out)):
            pass
    with pytest.raises(RuntimeError):
        with fileio.atomic_dir(str(out), replace=True) as tmp:
            open(os.path.join(tmp, "b.png"), "w").write("half")
            raise RuntimeError("interrupted")
    assert os.listdir(out) == ["a.png"] and os.listdir(tmp_path) == ["out"]
    with fileio.atomic_dir(str(out), replace=True) as tmp:
        open(os.path.join(tmp, "c.png"), "w").write("y")
    assert os.listdir(out) == ["c.png"]
