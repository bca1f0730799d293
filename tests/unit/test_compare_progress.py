"""The main job's progress display and closing summary, in process: the progress line (stages
done / total, elapsed, left of the budget), the latest row of a training's progress.csv read while
it is being written, a sampler's progress record (written per batch by trainkit.sampling, read by
the display), a running stage shown from the parent's polling, and the summary's exact text from
fixed rows."""

import io
import json
import os
import re
import sys
import time

import numpy as np
import pytest

from _support.entry import main_in_process
from evaluations import compare, report
from gans import sample as gans_sample
from trainkit import npz, sampling


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


# --- the line ---------------------------------------------------------------------------

def test_the_progress_line_says_stages_elapsed_and_whats_left_of_the_budget():
    assert compare.format_progress(3, 19, 125, 17 * 60) == "3/19 stages, 2:05 elapsed, 14:55 of 17:00 left"
    assert compare.format_progress(19, 19, 1100, 17 * 60, "report", "written") == (
        "19/19 stages, 18:20 elapsed, 1:20 over the 17:00 budget | report: written")
    assert compare.format_progress(0, 2, 3725, 7200) == "0/2 stages, 1:02:05 elapsed, 57:55 of 2:00:00 left"


def test_a_running_stage_shows_its_step_and_the_optional_columns_when_logged():
    assert compare.stage_detail(35) == "running for 0:35"
    assert compare.stage_detail(35, {"step": 1200.0, "samples": 76800.0}) == "running for 0:35, step 1,200"
    # without an ETA column: the time to the training's deadline
    assert compare.stage_detail(35, {"step": 7.0}, deadline_in=40.2) == "running for 0:35, step 7, deadline in 0:40"
    assert compare.stage_detail(35, None, deadline_in=-3) == "running for 0:35"
    row = {"step": 1200.0, "img_per_sec": 35.21, "eta_seconds": 95.0}
    assert compare.stage_detail(35, row, deadline_in=40) == "running for 0:35, step 1,200, 35.2 img/s, ETA 1:35"


def test_plain_lines_at_each_stage_start_and_end_and_at_most_every_interval_while_it_runs():
    clock, out = FakeClock(), io.StringIO()
    p = compare.Progress(4, 600, stream=out, tty=False, interval=30, clock=clock)
    assert p.poll_seconds == 30 and p.bar is None
    p.echo("[dcgan] training for up to 60 s, then sampling")
    p.start("dcgan/untrained")
    clock.now += 10
    p.running("dcgan/untrained", 10, {"step": 1.0})  # 10 s after the last line: not yet
    clock.now += 20
    p.running("dcgan/untrained", 30, {"step": 3.0})
    clock.now += 5
    p.finish("dcgan/untrained", "done in 0:35")
    p.finish("dcgan/untrained-samples", "reused")
    p.skip_to(3, "dcgan", "its remaining stages skipped")
    p.skip_to(2)  # never backwards
    assert out.getvalue().splitlines() == [
        "[dcgan] training for up to 60 s, then sampling",
        "progress: 0/4 stages, 0:00 elapsed, 10:00 of 10:00 left | dcgan/untrained: started",
        "progress: 0/4 stages, 0:30 elapsed, 9:30 of 10:00 left | dcgan/untrained: running for 0:30, step 3",
        "progress: 1/4 stages, 0:35 elapsed, 9:25 of 10:00 left | dcgan/untrained: done in 0:35",
        "progress: 2/4 stages, 0:35 elapsed, 9:25 of 10:00 left | dcgan/untrained-samples: reused",
        "progress: 3/4 stages, 0:35 elapsed, 9:25 of 10:00 left | dcgan: its remaining stages skipped",
    ]
    assert p.done == 3


def test_on_a_terminal_one_tqdm_bar_and_the_jobs_lines_above_it():
    clock, out, bar = FakeClock(), io.StringIO(), io.StringIO()
    p = compare.Progress(3, 120, stream=out, tty=True, interval=30, clock=clock, bar_file=bar)
    assert p.poll_seconds == 1.0
    p.start("ddgan/train")
    clock.now += 15
    p.running("ddgan/train", 15, {"step": 42.0, "eta_seconds": 30.0})
    last = bar.getvalue().split("\r")[-1]
    assert last.startswith("0/3 stages") and "0:15 elapsed, 1:45 of 2:00 left | ddgan/train: running for 0:15, " \
        "step 42, ETA 0:30" in last
    p.finish("ddgan/train", "done in 0:15")
    assert bar.getvalue().split("\r")[-1].startswith("1/3 stages")
    p.echo("[ddgan] FAILED samples: boom")
    p.close()
    assert out.getvalue() == "[ddgan] FAILED samples: boom\n" and "progress:" not in out.getvalue()


# --- a training's progress.csv ----------------------------------------------------------

def test_the_latest_step_is_the_last_complete_row(tmp_path):
    path = tmp_path / "progress.csv"
    assert compare.latest_progress(str(path)) is None  # not written yet
    path.write_bytes(b"loss,samp")  # the header itself half-written
    assert compare.latest_progress(str(path)) is None
    path.write_bytes(b"loss,samples,step\r\n")  # csv.writer's line ends; no row yet
    assert compare.latest_progress(str(path)) is None
    path.write_bytes(b"loss,samples,step\r\n0.9,64,1\r\n0.5,,2\r\n0.4,192,3")  # the last line half-written
    assert compare.latest_progress(str(path)) == {"loss": 0.5, "step": 2.0}  # blank cells left out
    with open(path, "ab") as f:
        f.write(b"\r\n")
    assert compare.latest_progress(str(path)) == {"loss": 0.4, "samples": 192.0, "step": 3.0}


def test_the_latest_row_is_read_from_the_tail_of_a_long_file(tmp_path):
    path = tmp_path / "progress.csv"
    rows = "".join(f"{0.5:.4f},{64 * i},{i},{i * 0.5:.1f}\r\n" for i in range(1, 2001))
    path.write_text("loss,samples,step,eta_seconds\n" + rows + "0.5,64")
    assert compare.latest_progress(str(path), tail_bytes=100) == {
        "loss": 0.5, "samples": 128000.0, "step": 2000.0, "eta_seconds": 1000.0}


def test_a_row_that_does_not_match_the_header_is_skipped(tmp_path):
    """The logger rewrites the file when a column appears: a row of the new width under the old
    header (or the reverse) is not read as if its cells were the header's."""
    path = tmp_path / "progress.csv"
    path.write_text("samples,step\n64,1\n128,2,0.3\n")
    assert compare.latest_progress(str(path)) == {"samples": 64.0, "step": 1.0}


# what a child writes in its stage folder (a Python expression), and what the parent shows of it
WATCHED = {
    "train": ("progress.csv", repr("samples,step\r\n64,7\r\n"), "step 7"),
    "samples-ddim-10": (sampling.PROGRESS_FILE, ('json.dumps({"samples_done": 256, "samples_total": 500, '
                                                 '"started": time.time(), "seconds": 21.0})'),
                        "256/500 samples, 12.2 img/s, ETA 0:20"),
}


@pytest.mark.parametrize("stage", sorted(WATCHED))
def test_a_running_stage_is_shown_from_what_it_writes(tmp_path, stage):
    """A child that writes a training's progress row (or a sampler's progress record) and then
    waits: the parent, polling it, reads it and shows the step (or samples written) while the child
    runs; the display's line tells when the child may exit (through a FIFO, so that nothing waits
    on a timer)."""
    name, content, shown = WATCHED[stage]
    stage_dir = tmp_path / "dcgan" / stage
    stage_dir.mkdir(parents=True)
    path, fifo = stage_dir / name, tmp_path / "go"
    os.mkfifo(fifo)
    child = ("import json, signal, time; signal.alarm(60)\n"  # never outlives a broken test
             f"open({str(path)!r}, 'w').write({content})\n"
             f"open({str(fifo)!r}).read()\n")

    class Releasing(compare.Progress):
        def running(self, label, seconds, latest=None, deadline=None):
            super().running(label, seconds, latest, deadline)
            if latest:
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # the child has not opened its end yet: the next poll
                    return
                os.write(fd, b"go")
                os.close(fd)

    out = io.StringIO()
    p = Releasing(1, 600, stream=out, tty=False, interval=0.01)
    watch = {"watch_csv": str(path)} if stage == "train" else {"watch_samples": True}
    record = compare.Stage(str(stage_dir), [sys.executable, "-c", child], **watch).run(reuse=False, progress=p)
    assert record["ok"], open(record["log"]).read()
    lines = out.getvalue().splitlines()
    assert lines[0] == f"progress: 0/1 stages, 0:00 elapsed, 10:00 of 10:00 left | dcgan/{stage}: started"
    running = rf"progress: 0/1 stages, .* \| dcgan/{stage}: running for 0:0\d, {shown}"
    assert any(re.fullmatch(running, line) for line in lines), lines
    assert re.fullmatch(rf"progress: 1/1 stages, .* \| dcgan/{stage}: done in 0:0\d", lines[-1])


# --- a sampler's progress record --------------------------------------------------------

def _record(directory, done, total, started, seconds):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / sampling.PROGRESS_FILE).write_text(json.dumps(
        {"samples_done": done, "samples_total": total, "started": started, "seconds": seconds}))


def test_a_sampling_stage_shows_samples_written_of_the_total_img_per_s_and_eta(tmp_path):
    stage_dir, since = tmp_path / "improved_diffusion" / "samples-ddim-10", 1000.0
    assert compare.latest_sampling(str(stage_dir), since) is None  # nothing written yet
    _record(stage_dir, 0, 500, since + 2, 0.5)  # sampling started, no batch done: no rate yet
    assert compare.stage_detail(3, compare.latest_sampling(str(stage_dir), since)) == "running for 0:03, 0/500 samples"
    _record(stage_dir, 256, 500, since + 2, 21.0)
    record = compare.latest_sampling(str(stage_dir), since)
    assert compare.stage_detail(23, record) == "running for 0:23, 256/500 samples, 12.2 img/s, ETA 0:20"
    _record(stage_dir, 5000, 5000, since + 2, 100.0)  # all written; gathering and writing the npz
    assert compare.stage_detail(103, compare.latest_sampling(str(stage_dir), since)) == (
        "running for 1:43, 5,000/5,000 samples, 50 img/s, ETA 0:00")
    # the stage ran again over that run: its record is an earlier sampling's, the new one is in a subfolder
    assert compare.latest_sampling(str(stage_dir), since + 10) is None
    _record(stage_dir / "samples-20261204-230000-000001", 8, 500, since + 12, 2.0)
    assert compare.latest_sampling(str(stage_dir), since + 10)["samples_done"] == 8
    # a first write caught half-done, or something that is not a record: none yet
    (stage_dir / "samples-20261204-230000-000001" / sampling.PROGRESS_FILE).write_text('{"samples_do')
    (stage_dir / sampling.PROGRESS_FILE).write_text('{"samples_done": "many"}')
    assert compare.latest_sampling(str(stage_dir), 0) is None


def test_sample_to_npz_rewrites_its_record_after_every_batch(tmp_path):
    """What the record says while each batch is drawn (read from inside the sampler, so nothing
    waits on a timer), and at the end; a record that was there before is left as it was, and the
    samples are the same either way."""
    seen = []

    def fn(rnd, idx):
        seen.append(sampling.read_progress(str(out)))
        return np.asarray(rnd.randint(256, 2, 2, 1), np.uint8), None

    out = tmp_path / "mine"
    out.mkdir()
    before = time.time()
    first = npz.read_samples(sampling.sample_to_npz(fn, 5, 2, seed=3, out_dir=str(out)))[0]
    assert [r["samples_done"] for r in seen] == [0, 2, 4] and {r["samples_total"] for r in seen} == {5}
    final = sampling.read_progress(str(out))
    assert final["samples_done"] == 5 and final["samples_total"] == 5
    assert before <= final["started"] <= time.time() and final["seconds"] >= seen[-1]["seconds"] >= 0
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / sampling.PROGRESS_FILE).write_text("another run's\n")
    second = npz.read_samples(sampling.sample_to_npz(fn, 5, 2, seed=3, out_dir=str(theirs)))[0]
    assert (theirs / sampling.PROGRESS_FILE).read_text() == "another run's\n"
    assert np.array_equal(first, second)


def test_a_real_sampler_leaves_the_record_the_display_reads(cdcgan_run, tmp_path, monkeypatch, capsys):
    stage_dir, since = tmp_path / "dcgan" / "samples-default", time.time()
    code, err = main_in_process(gans_sample, ["--model_path", cdcgan_run, "--num_samples", 5, "--batch_size", 2,
                                              "--logdir", stage_dir], monkeypatch, capsys)
    assert code == 0, err
    record = compare.latest_sampling(str(stage_dir), since)
    assert (record["samples_done"], record["samples_total"]) == (5, 5), record
    assert re.fullmatch(r"running for 0:01, 5/5 samples, \S+ img/s, ETA 0:00", compare.stage_detail(1, record))
    assert npz.read_samples(compare.find_samples(str(stage_dir)))[0].shape[0] == 5


def test_a_failed_or_reused_stage_says_so(tmp_path):
    out = io.StringIO()
    p = compare.Progress(2, 60, stream=out, tty=False)
    fail = compare.Stage(str(tmp_path / "run" / "bad"), [sys.executable, "-c", "raise SystemExit(3)"])
    assert fail.run(reuse=False, progress=p)["exit"] == 3
    ok = compare.Stage(str(tmp_path / "run" / "good"), [sys.executable, "-c", "pass"])
    assert ok.run(reuse=False)["ok"]
    assert ok.run(reuse=True, progress=p)["reused"]
    lines = out.getvalue().splitlines()
    assert lines[-2].endswith("| run/bad: FAILED (exit 3)") and lines[-2].startswith("progress: 1/2 stages")
    assert lines[-1].endswith("| run/good: reused") and lines[-1].startswith("progress: 2/2 stages")


def test_the_total_counts_every_job_of_the_default_comparison():
    runs = {r["name"]: r for r in compare.read_config("flags/compare/digits.sh")["runs"]}
    # untrained + its samples, the training, one job per sampler, the post-hoc EMA sweep (the
    # reconstruction, one sampling per σ_rel, the chosen one's full sampling), the controllability
    # entry points
    assert compare.planned_stages(runs["dcgan"]) == 2 + 1 + 1 + (1 + 3 + 1) + 1
    assert compare.planned_stages(runs["improved_diffusion"]) == 2 + 1 + 3 + (1 + 3 + 1) + 2
    assert compare.planned_stages(runs["improved_diffusion"], baseline=False, control=False) == 1 + 3 + (1 + 3 + 1)
    assert compare.planned_stages(runs["cddpm"]) == 2 + 1 + 2 + 2  # no sweep


# --- the summary ------------------------------------------------------------------------

def _row(sampler, fd, std, p, r):
    return {"sampler": sampler, "fd_digits": fd, "fd_std": std, "precision": p, "recall": r, "num_samples": 500}


RESULTS = [
    {"name": "dcgan", "rows": [_row("default", 156.34, 4.213, 0.8123, 0.4551)], "failed": []},
    # the best row of several samplers: the lowest FD, wherever it is in the list
    {"name": "improved_diffusion", "rows": [_row("full", 61.2, 2.0, 0.7, 0.61), _row("ddim-10", 48.77, 1.91, 0.71, 0.6),
                                            _row("dpmpp_2m-10", float("nan"), None, None, None)], "failed": []},
    {"name": "ddgan", "rows": [_row("default", 1523.2, 40.0, 0.0, 0.0012)], "failed": []},
    {"name": "broken", "rows": [], "failed": [("train", {"error": "ValueError: image_size 17"})]},
]


def test_the_summary_is_each_runs_best_row_as_the_table_writes_it():
    assert report.summary_lines(RESULTS) == [
        "best row per run (FD-digits ± std, precision, recall; lower FD-digits is better):",
        "  dcgan:                        FD-digits 156 ± 4.21, precision 0.812, recall 0.455",
        "  improved_diffusion (ddim-10): FD-digits 48.8 ± 1.91, precision 0.71, recall 0.6",
        "  ddgan:                        FD-digits 1,523 ± 40, precision 0, recall 0.0012",
        "  broken:                       FAILED (train): ValueError: image_size 17",
    ]
    assert report.summary_lines(RESULTS[:1], "FID")[1] == "  dcgan: FID 156 ± 4.21, precision 0.812, recall 0.455"


@pytest.mark.parametrize("column,key", [("FD-digits", "fd_digits"), ("FD std", "fd_std"), ("precision", "precision"),
                                        ("recall", "recall")])
def test_the_summarys_numbers_are_the_report_tables_cells(tmp_path, column, key):
    results = [dict(r, package="gans", dir=str(tmp_path / r["name"])) for r in RESULTS[:2]]
    table = {(cells[0][0], cells[1][0]): cells for cells in report.table_rows(results, str(tmp_path))}
    index = [c for c, _ in report.COLUMNS].index(column)
    line = report.summary_lines(results)[2]
    assert f" {table[('improved_diffusion', 'ddim-10')][index][0]}" in line
    assert table[("improved_diffusion", "ddim-10")][index][0] == report._fmt(RESULTS[1]["rows"][1][key])


def test_a_real_terminal_is_detected_and_gets_the_bar():
    """Progress() without tty= asks its bar file: a pseudo-terminal gets the tqdm bar, whose text
    is read back from the terminal's other end; a pipe gets plain lines."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty has 0 columns
    with os.fdopen(slave, "w") as terminal:
        out = io.StringIO()
        p = compare.Progress(2, 60, stream=out, bar_file=terminal)
        p.start("dcgan/train")
        p.finish("dcgan/train", "done in 0:01")
        p.close()
        # read what the terminal holds until the last state shows (one read may return part of it
        # on a loaded machine); polled with a deadline, never a fixed sleep
        import select
        import time

        text, deadline = "", time.monotonic() + 10
        while "1/2 stages" not in text and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                text += os.read(master, 65536).decode()
    os.close(master)
    assert "1/2 stages" in text and "dcgan/train" in text and out.getvalue() == ""
    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe:
        out = io.StringIO()
        p = compare.Progress(2, 60, stream=out, bar_file=pipe)
        p.start("dcgan/train")
        p.close()
    os.close(r)
    assert p.bar is None and out.getvalue().startswith("progress: 0/2 stages")
