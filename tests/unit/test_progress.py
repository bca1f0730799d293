"""What a person watches during training, for every family (all train through trainkit.loop):
the speed and time-left columns of every log row, the tqdm bar on a terminal (and --no_progress),
and Weights & Biases as one more logger output (offline, read back from its own run file)."""

import argparse
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest
import torch

import helpers
from _support.tasks import Scalar
from trainkit import checkpoint, data, logger, loop, run
from trainkit.errors import UserError
from trainkit.logger import read_progress


class Counter(Scalar):
    """The loop tests' one-parameter family with loss s + 1 at step s, whose step takes `seconds`
    on the loop's clock (when a test drives that clock)."""

    def __init__(self, clock=None, seconds=0.0):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def step(self, batch, step, epoch):
        if self.clock is not None:
            self.clock[0] += self.seconds
        super().step(batch, step, epoch)
        return {"loss": torch.tensor(float(step + 1))}


def _batches():
    return data.Batches(data.ImageData(torch.zeros(32, 1, 4, 4, dtype=torch.uint8), None, "fake"), 4)


def _run(run_dir, resume="", **options):
    return run.setup("test", argparse.Namespace(logdir=str(run_dir), seed=0, **options), resume=resume, stdout=False)


@pytest.fixture(autouse=True)
def _signals_and_env(monkeypatch):
    import signal

    monkeypatch.delenv("TRAINKIT_DEADLINE", raising=False)
    monkeypatch.delenv("OPENAI_LOG_FORMAT", raising=False)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.fixture
def clock(monkeypatch):
    """The loop's speed clock, moved only by the task's steps."""
    now = [1000.0]
    monkeypatch.setattr(loop, "_now", lambda: now[0])
    return now


# --- the speed columns ----------------------------------------------------------------------

def test_rows_hold_the_speed_and_the_time_left_of_their_interval(tmp_path, clock):
    """Steps of 0.5 s, 4 images each: 0.5 s per step, 8 images per second, and the steps left at
    0.5 s each, in every row, down to 0 at the last step."""
    lp = loop.Loop(_run(tmp_path), Counter(clock, 0.5), _batches(), total_steps=10, log_interval=3)
    assert lp.run_loop() == 10
    rows = read_progress(tmp_path)
    assert [r["step"] for r in rows] == [3, 6, 9, 10]
    assert [r["sec_per_step"] for r in rows] == pytest.approx([0.5] * 4)
    assert [r["img_per_sec"] for r in rows] == pytest.approx([8.0] * 4)
    assert [r["eta_seconds"] for r in rows] == pytest.approx([3.5, 2.0, 0.5, 0.0])
    assert [r["loss"] for r in rows] == [2.0, 5.0, 8.0, 10.0]  # the family's own columns as before
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"img_per_sec", "sec_per_step", "eta_seconds", "samples", "step"} <= set(header)


def test_a_real_short_run_logs_sane_speeds(tmp_path):
    """No clock driven: the columns are there with values that add up to the run's own time."""
    lp = loop.Loop(_run(tmp_path), Counter(), _batches(), total_steps=20, log_interval=5)
    began = time.perf_counter()
    lp.run_loop()
    wall = time.perf_counter() - began
    rows = read_progress(tmp_path)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for r in rows:  # images of the row's steps over the row's seconds
        assert r["sec_per_step"] > 0 and r["img_per_sec"] == pytest.approx(4 / r["sec_per_step"], rel=1e-9)
    assert sum(5 * r["sec_per_step"] for r in rows) <= wall
    etas = [r["eta_seconds"] for r in rows]
    assert all(e >= 0 for e in etas) and etas[0] > 0 and etas[-1] == 0.0


def test_the_nearer_end_wins_and_a_run_without_one_has_no_eta(tmp_path, clock, monkeypatch):
    # steps of 1000 s towards step 4 (2000 s left at step 2), but a deadline 600 s away
    monkeypatch.setenv("TRAINKIT_DEADLINE", str(time.time() + 600))
    lp = loop.Loop(_run(tmp_path / "a"), Counter(clock, 1000.0), _batches(), total_steps=4, log_interval=2)
    lp.run_loop()
    first, last = read_progress(tmp_path / "a")
    assert 500 < first["eta_seconds"] <= 600 and last["eta_seconds"] == 0.0  # the last step is the nearer end
    # no --max_steps and no deadline: a stop after step 1 logs speed but no time left
    monkeypatch.delenv("TRAINKIT_DEADLINE")
    lp = loop.Loop(_run(tmp_path / "b"), Counter(clock, 0.25), _batches(), total_steps=None, log_interval=100)
    monkeypatch.setitem(run._signals, "count", 1)  # as after SIGTERM: stops at the first vote
    assert lp.run_loop() == 1
    (row,) = read_progress(tmp_path / "b")
    assert row["sec_per_step"] == 0.25 and row["img_per_sec"] == 16.0 and "eta_seconds" not in row


def _same(a, b):
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_the_speed_never_reaches_a_checkpoint(tmp_path, clock, monkeypatch):
    """Two runs at different speeds, one with a deadline, write the same checkpoints: weights,
    data position and every random stream."""
    saved = []
    for name, seconds in (("slow", 9.0), ("fast", 0.01)):
        if name == "fast":
            monkeypatch.setenv("TRAINKIT_DEADLINE", str(time.time() + 3600))
        loop.Loop(_run(tmp_path / name), Counter(clock, seconds), _batches(), total_steps=4, log_interval=1).run_loop()
        saved.append({p.name: checkpoint.load(str(p)) for p in sorted((tmp_path / name).glob("*.pt"))})
    assert sorted(saved[0]) == ["model000004.pt", "state000004.pt"] and _same(saved[0], saved[1])
    assert [r["sec_per_step"] for r in read_progress(tmp_path / "slow")] == [9.0] * 4


def test_no_bar_when_stderr_is_no_terminal_or_when_asked(tmp_path):
    lp = loop.Loop(_run(tmp_path / "a"), Counter(), _batches(), total_steps=2)
    lp.run_loop()  # pytest's captured stderr is no terminal
    assert lp.progress and lp._bar is None
    assert not loop.Loop(_run(tmp_path / "b", no_progress=True), Counter(), _batches(), total_steps=2).progress


# --- the bar on a terminal ------------------------------------------------------------------

GANS_TINY = ["--model", "dcgan", "--image_size", "16", "--num_channels", "1", "--nz", "4", "--ngf", "4",
             "--ndf", "4", "--batch_size", "8", "--grid_size", "4", "--max_steps", "6", "--log_interval", "3",
             "--save_interval", "6"]


def _train_on_a_terminal(digits, run_dir, *extra):
    """gans.train with stdout and stderr on one pseudo-terminal: (exit code, what the terminal got)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a real width for the bar
    python = helpers.ROOT / "tests" / "bin" / "python"  # a forked child, with these descriptors
    proc = subprocess.Popen([str(python), "-m", "gans.train", "--data_dir", str(digits(16)), *GANS_TINY,
                             "--logdir", str(run_dir), *extra],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=helpers.test_env(),
                            cwd=str(helpers.ROOT))
    os.close(slave)
    out, deadline = b"", time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    code = proc.wait(timeout=60)
    return code, out.decode(errors="replace")


def test_a_terminal_gets_a_bar_that_does_not_garble_the_rows(digits, tmp_path):
    code, text = _train_on_a_terminal(digits, tmp_path / "run")
    assert code == 0, text
    assert "training: 100%" in text and "6/6" in text and ("step/s" in text or "s/step" in text), text
    assert "img/s" in text  # the row's speed in the bar's postfix
    # every line of a row's table is whole: the bar was cleared before it was written
    table = [line.split("\r")[-1] for line in text.splitlines() if "| img_per_sec" in line or "| step " in line]
    assert len(table) == 4 and all(line.startswith("| ") and line.rstrip().endswith("|") for line in table), table
    assert [r["step"] for r in read_progress(tmp_path / "run")] == [3, 6]


def test_no_progress_keeps_the_terminal_free_of_a_bar(digits, tmp_path):
    code, text = _train_on_a_terminal(digits, tmp_path / "run", "--no_progress")
    assert code == 0, text
    assert "training:" not in text and "step/s" not in text and "s/step" not in text, text
    assert "| img_per_sec" in text  # the rows are there all the same


# --- Weights & Biases -----------------------------------------------------------------------

def _wandb_records(run_file):
    """The records of a .wandb run file, read with wandb's own protobuf messages. The file is a
    7-byte header, then a LevelDB-style log: 32 KiB blocks of chunks, each with a 7-byte header
    (CRC32, little-endian length u16, type u8: 1 whole, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    raw, block, pos, pending, records = run_file.read_bytes(), 32768, 7, b"", []
    assert raw[:4] == b":W&B", run_file
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        chunk, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _wandb_run(root):
    """(run id, {step: {key: value}}) of the one offline run under `root`."""
    import json

    import wandb

    wandb.teardown()  # waits for wandb's service process to write out the run file
    (run_file,) = root.rglob("offline-run-*/run-*.wandb")
    rows, ids = [], set()
    for record in _wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
        elif record.WhichOneof("record_type") == "run":
            ids.add(record.run.run_id)
    (run_id,) = ids
    return run_id, {int(r["_step"]): r for r in rows}


def _wandb_history(root):
    """{step: {key: value}} of the one offline run under `root`."""
    return _wandb_run(root)[1]


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network, no account
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # nothing written outside tmp_path
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)  # else every run would continue that one
    yield
    import wandb

    wandb.teardown()  # ends wandb's service process; the next test's run starts afresh


@pytest.mark.parametrize("how", ["--wandb", "OPENAI_LOG_FORMAT"])
def test_wandb_gets_every_row_at_its_step(how, tmp_path, offline_wandb, monkeypatch, clock):
    wandb_dir = tmp_path / "wandb-dir"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    if how == "OPENAI_LOG_FORMAT":
        monkeypatch.setenv("OPENAI_LOG_FORMAT", "stdout,log,csv,wandb")
    r = _run(tmp_path / "run", wandb=how == "--wandb")
    loop.Loop(r, Counter(clock, 0.5), _batches(), total_steps=4, log_interval=2).run_loop()
    history = _wandb_history(wandb_dir)
    assert sorted(history) == [2, 4]
    assert history[2]["loss"] == 1.5 and history[4]["loss"] == 3.5  # means of 1, 2 and of 3, 4
    assert history[4]["img_per_sec"] == 8.0 and history[4]["samples"] == 16 and history[2]["eta_seconds"] == 1.0
    assert not (tmp_path / "run" / "wandb").exists()  # $WANDB_DIR was honoured


def test_wandb_files_default_to_the_run_directory(tmp_path, offline_wandb, clock):
    loop.Loop(_run(tmp_path / "run", wandb=True), Counter(clock, 0.5), _batches(), total_steps=2,
              log_interval=2).run_loop()
    assert _wandb_history(tmp_path / "run" / "wandb")[2]["loss"] == 1.5


def _train_with_wandb_dir(run_dir, wandb_dir, monkeypatch, clock, steps, resume=""):
    """Train the counter to `steps` in `run_dir` with --wandb, its files under `wandb_dir` (a
    folder per start, so that each start's run file is read on its own): (run id, history)."""
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    r = _run(run_dir, resume=resume, wandb=True)
    loop.Loop(r, Counter(clock, 0.5), _batches(), total_steps=steps, log_interval=2).run_loop()
    return _wandb_run(wandb_dir)


def test_a_resumed_run_continues_its_wandb_run(tmp_path, offline_wandb, monkeypatch, clock):
    first_id, first = _train_with_wandb_dir(tmp_path / "run", tmp_path / "w1", monkeypatch, clock, 4)
    assert (tmp_path / "run" / "wandb-run-id").read_text() == first_id + "\n"
    again_id, again = _train_with_wandb_dir(tmp_path / "run", tmp_path / "w2", monkeypatch, clock, 8, resume="auto")
    assert again_id == first_id  # the same W&B run, not a second one
    assert sorted(first) == [2, 4] and sorted(again) == [6, 8]  # the steps go on where the first part stopped
    assert again[6]["loss"] == 5.5 and again[8]["samples"] == 32  # the resumed training's own numbers
    assert (tmp_path / "run" / "wandb-run-id").read_text() == first_id + "\n"  # kept as it was
    # a fresh run directory is a new W&B run
    other_id, other = _train_with_wandb_dir(tmp_path / "other", tmp_path / "w3", monkeypatch, clock, 2)
    assert other_id != first_id and sorted(other) == [2]
    assert (tmp_path / "other" / "wandb-run-id").read_text() == other_id + "\n"


def test_a_wandb_run_id_put_in_the_run_directory_is_continued_and_kept(tmp_path, offline_wandb, monkeypatch, clock):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "wandb-run-id").write_text("  mine123\n\n")  # a user's file, as they wrote it
    run_id, history = _train_with_wandb_dir(tmp_path / "run", tmp_path / "w", monkeypatch, clock, 2)
    assert run_id == "mine123" and sorted(history) == [2]
    assert (tmp_path / "run" / "wandb-run-id").read_text() == "  mine123\n\n"


def test_wandb_run_id_in_the_environment_wins_and_is_recorded(tmp_path, offline_wandb, monkeypatch, clock):
    monkeypatch.setenv("WANDB_RUN_ID", "fromenv1")
    run_id, _ = _train_with_wandb_dir(tmp_path / "run", tmp_path / "w", monkeypatch, clock, 2)
    assert run_id == "fromenv1" and (tmp_path / "run" / "wandb-run-id").read_text() == "fromenv1\n"


@pytest.mark.parametrize("text", ["", "two ids\n", "a/b\n"])
def test_a_bad_wandb_run_id_file_is_one_line_naming_it(text, tmp_path, offline_wandb, monkeypatch):
    import wandb

    monkeypatch.setattr(wandb, "init", lambda *a, **k: pytest.fail("wandb.init called"))
    path = tmp_path / "run" / "wandb-run-id"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: not a W&B run id \('.*'\); "
                                        r"write the id of the W&B run to continue, or delete the file to start a new "
                                        r"W&B run$"):
        _run(tmp_path / "run", wandb=True)
    assert path.read_text() == text


def test_without_wandb_one_line_and_no_run_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(logger, "wandb_installed", lambda: False)
    with pytest.raises(UserError, match=r'^--wandb needs the wandb package: pip install -e "\.\[wandb\]"$'):
        _run(tmp_path / "run", wandb=True)
    monkeypatch.setenv("OPENAI_LOG_FORMAT", "csv,wandb")
    with pytest.raises(UserError, match=r"^wandb in \$OPENAI_LOG_FORMAT needs the wandb package"):
        _run(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_wandb_that_cannot_start_is_one_line(tmp_path, offline_wandb, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("api_key not configured (no-tty)\ncall wandb.login(key=...)")

    import wandb

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.raises(UserError, match=r"^wandb could not start a run \(api_key not configured \(no-tty\)\); "
                                        r"log in with `wandb login`, or set WANDB_MODE=offline$"):
        _run(tmp_path / "run", wandb=True)
    assert not (tmp_path / "run" / "wandb-run-id").exists()  # no id recorded for a run that never started


def test_every_train_entry_point_has_the_flags():
    import importlib

    for module, build in (("gans.train", "create_argparser"), ("ddgan.train", "create_parser"),
                          ("improved_diffusion.train", "create_argparser")):
        args = getattr(importlib.import_module(module), build)().parse_known_args(["--no_progress", "--wandb"])[0]
        assert args.no_progress and args.wandb, module


def test_openais_logger_module_has_the_wandb_format(offline_wandb, tmp_path, monkeypatch):
    """Code written against openai's `improved_diffusion.logger` gets W&B from $OPENAI_LOG_FORMAT:
    the rows at their `step`, else at the row's number, as its tensorboard format."""
    monkeypatch.setenv("OPENAI_LOG_FORMAT", "csv,wandb")
    helpers.log_two_openai_rows(tmp_path / "run")
    run_id, history = _wandb_run(tmp_path / "run")
    assert {step: row["loss"] for step, row in history.items()} == {1: 0.5, 7: 0.25}
    assert (tmp_path / "run" / "wandb-run-id").read_text().strip() == run_id
