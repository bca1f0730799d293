"""The main job's progress display: stages done of the total, the time elapsed and left of the
budget, and what the running stage reports of itself (a training's latest progress.csv row, a
sampler's samples written of the total). On a terminal a tqdm bar; in a log plain lines."""

import glob
import os
import sys
import time

# a running training's last complete progress.csv row (trainkit's one progress-file reader)
from trainkit.progress_file import latest_progress  # noqa: F401 (re-export)


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour up."""
    h, rest = divmod(int(round(max(seconds, 0))), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def latest_sampling(stage_dir: str, since: float = 0.0):
    """The progress record (trainkit.sampling.read_progress) of the sampler a sampling stage runs,
    or None while it has written none. The sampler writes into the stage's directory or, when that
    holds an earlier run's files, into a fresh samples-<time> subfolder (as find_samples); a record
    whose sampling started before `since` (the stage's start) is an earlier run's and not shown."""
    from trainkit import sampling  # (imports torch: only when a sampler is watched)

    for d in sorted(glob.glob(os.path.join(stage_dir, "samples-*")), reverse=True) + [stage_dir]:
        record = sampling.read_progress(d)
        if record and record["started"] >= since:
            return record
    return None


def sampling_detail(record: dict) -> list:
    """`256/500 samples, 12.3 img/s, ETA 0:20` from a sampler's progress record (the rate once a
    batch is done)."""
    done, total = int(record["samples_done"]), int(record["samples_total"])
    parts = [f"{done:,}/{total:,} samples"]
    if done > 0 and record["seconds"] > 0:
        rate = done / record["seconds"]
        parts += [f"{rate:.3g} img/s", f"ETA {clock(max(total - done, 0) / rate)}"]
    return parts


def stage_detail(seconds: float, latest=None, deadline_in=None) -> str:
    """What a running stage shows: how long it has run and, for a training, its latest logged step
    with the img/s and ETA columns when the training logs them (else the time to its deadline);
    for a sampler (`latest` its progress record), the samples written of the total, img/s, ETA."""
    parts = [f"running for {clock(seconds)}"]
    if latest and "samples_total" in latest:
        return ", ".join(parts + sampling_detail(latest))
    def number(k):
        return latest.get(k) if latest and isinstance(latest.get(k), float) else None
    if number("step") is not None:
        parts.append(f"step {int(number('step')):,}")
    if number("img_per_sec") is not None:
        parts.append(f"{number('img_per_sec'):.3g} img/s")
    if number("eta_seconds") is not None:
        parts.append(f"ETA {clock(number('eta_seconds'))}")
    elif deadline_in is not None and deadline_in > 0:
        parts.append(f"deadline in {clock(deadline_in)}")
    return ", ".join(parts)


def budget_text(elapsed: float, budget: float) -> str:
    left = budget - elapsed
    if left >= 0:
        return f"{clock(elapsed)} elapsed, {clock(left)} of {clock(budget)} left"
    return f"{clock(elapsed)} elapsed, {clock(-left)} over the {clock(budget)} budget"


def format_progress(done: int, total: int, elapsed: float, budget: float, stage="", detail="") -> str:
    """One plain progress line: `3/19 stages, 2:05 elapsed, 14:55 of 17:00 left | RUN/STAGE: detail`."""
    text = f"{done}/{total} stages, {budget_text(elapsed, budget)}"
    if stage:
        text += f" | {stage}" + (f": {detail}" if detail else "")
    return text


class Progress:
    """The job's one progress display: stages done of the total, time elapsed and left of the
    budget, and the running stage's own progress. On a terminal (stderr) a tqdm bar, refreshed
    every `poll_seconds`; otherwise (a log file, CI) a `progress:` line on `stream` when a stage
    starts or ends, and at most every `interval` seconds while one runs. `clock` is time.time
    (tests pass their own)."""

    def __init__(self, total: int, budget_seconds: float, stream=None, tty=None, interval=30.0,
                 clock=time.time, bar_file=None):
        self.total, self.budget, self.interval, self.clock = total, budget_seconds, interval, clock
        self.stream = stream or sys.stdout
        self.bar_file = bar_file or sys.stderr
        self.done = 0
        self.started = clock()
        self._last_line = None
        tty = self.bar_file.isatty() if tty is None else tty
        self.poll_seconds = min(1.0, interval) if tty else interval
        self.bar = None
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=self.bar_file, unit="stage", dynamic_ncols=True,
                            bar_format="{n_fmt}/{total_fmt} stages |{bar:16}| {desc}")
            self._show("", "")

    def echo(self, text: str):
        """A line of the job's own output (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
            self.stream.flush()
        else:
            print(text, file=self.stream, flush=True)

    def _show(self, stage, detail, line=True):
        elapsed = self.clock() - self.started
        if self.bar is not None:
            self.bar.n = self.done
            where = f" | {stage}" + (f": {detail}" if detail else "") if stage else ""
            text = budget_text(elapsed, self.budget) + where
            self.bar.set_description_str(text, refresh=False)
            self.bar.refresh()
        elif line:
            print("progress: " + format_progress(self.done, self.total, elapsed, self.budget, stage, detail),
                  file=self.stream, flush=True)
            self._last_line = self.clock()

    def start(self, label: str):
        self._show(label, "started")

    def running(self, label: str, seconds: float, latest=None, deadline=None):
        due = self._last_line is None or self.clock() - self._last_line >= self.interval
        deadline_in = deadline - time.time() if deadline is not None else None
        self._show(label, stage_detail(seconds, latest, deadline_in), line=due)

    def finish(self, label: str, status: str):
        self.done = min(self.done + 1, self.total)
        self._show(label, status)

    def skip_to(self, done: int, label: str = "", why: str = ""):
        """Count stages that will not run (an earlier stage of their run failed) as done."""
        if done > self.done:
            self.done = min(done, self.total)
            self._show(label, why)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

