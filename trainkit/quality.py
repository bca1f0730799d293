"""The quality probe's schedule and record: at which points of a run's budget rank 0 measures
its samples (trainkit.loop calls it), and the rows of RUN_DIR/quality.csv.

`probe` is e.g. evaluations.probe.Probe: `.points`, `.num_samples`, and a call on uint8 N,H,W,C
images and labels that returns {"fd", "fd_std"}. `points - 1` points are evenly spaced inside
the budget (the time to $TRAINKIT_DEADLINE when one is set, else the steps to the last step);
the last is the end of training, not a stop by a signal (the loop decides that one).
"""

import csv
import io
import math
import time

import blobfile as bf
import torch

from . import dist, fileio, stop

QUALITY_FILE = "quality.csv"
QUALITY_COLUMNS = ("step", "samples", "train_seconds", "probe_seconds", "fd", "fd_std", "num_samples")


class ProbeSchedule:
    def __init__(self, probe, logger):
        self.probe = probe if probe is not None and getattr(probe, "points", 0) > 0 else None
        self.logger = logger
        self.due = []  # rank 0's remaining points: ("step" | "time", value)
        self.last = None  # the step of the latest probe
        self._seconds = 0.0  # the probes' own time, left out of the training seconds
        self._started = time.perf_counter()

    def plan(self, start: int, total) -> None:
        """Rank 0's points for a run at step `start` whose last step is `total` (or None)."""
        self._started = time.perf_counter()
        if self.probe is None or not dist.is_main():
            return
        with dist.rank_zero_only("quality probe: plan"):
            k = self.probe.points
            limit = stop.deadline()
            if limit is not None:
                now, budget = time.time(), max(limit - time.time(), 0.0)
                self.due = [("time", now + budget * i / k) for i in range(1, k)]
                what = f"every {budget / k:.0f} s of the {budget:.0f} s to $TRAINKIT_DEADLINE"
            elif total is not None:
                self.due = [("step", start + math.ceil((total - start) * i / k)) for i in range(1, k)]
                what = f"every {(total - start) / k:.0f} steps to step {total}"
            else:
                self.probe = None
                self.logger.log("quality probe off: the run has no budget (--max_steps or $TRAINKIT_DEADLINE) "
                                "to space its points over")
                return
            self.logger.log(f"quality probe: {self.probe.num_samples} samples {what} and at the end, "
                            f"into {QUALITY_FILE}")

    def reached(self, step: int) -> bool:
        if not self.due:
            return False
        kind, value = self.due[0]
        return step >= value if kind == "step" else time.time() >= value

    def run(self, task, step: int, images_per_step: int, seed: int, run_dir: str) -> None:
        """Rank 0: sample through `task.probe_images`, measure, append a row to QUALITY_FILE
        (rewritten whole, atomically). Other ranks only drop the points passed."""
        while self.reached(step):  # one probe for points passed together
            self.due.pop(0)
        if not dist.is_main():
            return
        with dist.rank_zero_only("quality probe"):
            self._measure(task, step, images_per_step, seed, run_dir)

    def _measure(self, task, step, images_per_step, seed, run_dir) -> None:
        self.last = step
        began = time.perf_counter()
        weights = task.state_dicts()[task.sample_weights(step)]
        with torch.no_grad():
            images, labels = task.probe_images(weights, self.probe.num_samples, seed)
        measured = self.probe(images, labels)
        seconds = time.perf_counter() - began
        row = {"step": step, "samples": step * images_per_step,
               "train_seconds": round(began - self._started - self._seconds, 3),
               "probe_seconds": round(seconds, 3), "fd": measured["fd"], "fd_std": measured["fd_std"],
               "num_samples": len(images)}
        self._seconds += seconds
        path = bf.join(run_dir, QUALITY_FILE)
        old = bf.BlobFile(path, "r").read() if bf.exists(path) else ""
        out = io.StringIO()
        writer = csv.DictWriter(out, QUALITY_COLUMNS)
        if not old:
            writer.writeheader()
        writer.writerow(row)
        fileio.write_text(path, old + out.getvalue())
        self.logger.log(f"quality probe at step {step}: {getattr(self.probe, 'name', 'FD')} "
                        f"{measured['fd']:.4g} ± {measured['fd_std']:.2g} ({len(images)} samples, {seconds:.1f} s)")
