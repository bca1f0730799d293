"""The training loop every family runs: resume, the step loop, and the log, stop and checkpoint
cadence. A family supplies a `Task` (what one optimizer step does, and its state); the loop
decides everything else, once, for every family.

What a family implements (subclass `Task`):

- `step(batch, step, epoch) -> stats`: one optimizer step on this rank's batch (`batch` is one
  item of `trainkit.data.Batches`: images and labels, `--batch_size` images per rank; a family
  splits it into `--microbatch` / `--grad_accum` pieces itself). `step` is the number of steps
  done before this one, `epoch` the data epoch of the batch. `stats` maps a name to a 0-dim
  tensor (one observation) or to a `(sum, count)` pair of tensors, left on the device: the loop
  adds them up there and reads them once per log interval, so no step waits on `.item()`.
- `state_dicts()`: the checkpoint files of a step, by prefix (`model`, `ema_0.9999_`, ...).
- `trainer_state()`: plain data for the step's state file (loss scales, sampler history).
- `load_state_dicts(ck)`: restore from a `checkpoint.Checkpoint` (`ck.state` is None for a
  directory written by openai's code: weights only).
- `modules()`: the networks whose parameters every rank must hold identically.
- `sample_weights(step)`: the prefix a sampler should use (recorded in every state file).
- optional `probe_images(weights, n, seed) -> (uint8 N,H,W,C, labels or None)`: n images
  from the sampling network holding `weights` (the state_dict `sample_weights` names), with
  the family's cheapest sampler and noise fixed by (seed, index), for the quality probe below.
- optional `log_extras()` (keys added to a log row), `artefacts(run_dir, step)` (files
  written beside a checkpoint, e.g. gans' grid PNG; called on every rank, rank 0 writes) and
  `epoch_end(run_dir, epoch, step)` (after the last step of each data epoch, before that epoch's
  checkpoint, on every rank: e.g. DDGAN's per-epoch sample images).
- optional `after_step(run_dir, step)`: after every step, on every rank (no collective): files
  written between checkpoints, such as the power-function EMA snapshots (trainkit.phema).

What the loop guarantees:

- **Declarations**: the Task's `loss_keys` and `discriminator_keys` are written into the run's
  options.json (the file run.setup wrote for this run only: a user's own is never rewritten).
- **Resume** from `run.resume` (a file, a run directory or `auto`, resolved by `run.setup`).
  With the same world size, the data position and every rank's RNG are restored and the run
  continues bit for bit. With another world size (the **world-size policy**) the data position
  is re-derived for the new global batch, at the first batch of the same epoch that holds no
  image already seen, and every rank is re-seeded from (--seed, step, rank): deterministic, no two
  ranks share noise, and the log says so. A checkpoint already at the last step trains 0 steps.
- **Stop vote**: a signal or $TRAINKIT_DEADLINE stops every rank at the same step, with a
  checkpoint and exit 0. The ranks vote every K steps (trainkit.vote: K keeps the vote under 1%
  of training time and votes at most `MAX_VOTE_GAP_S` apart). Every log and checkpoint step
  also votes. The statistics summed between rows are trainkit.stepstats'.
- **Non-finite policy**: a loss or statistic that is not finite stops the run with a one-line
  error naming the step, before anything holding it is written: the last good checkpoint stays
  the newest complete one. Under fp16 the GradScaler already skipped that step and lowered the
  scale: the loop leaves the step out of the logged means and goes on.
- **Checkpoints** every `save_interval` steps, at chosen epoch ends, at a stop and at the last
  step; before each, a cross-rank check that every rank holds the same parameters.
- **Logs**: one row every `log_interval` steps (and at a stop and at the end), with `step`,
  `samples` (images seen, all ranks), and the speed over the row's interval of wall-clock time:
  `sec_per_step` and `img_per_sec` (all ranks' images), and when the run has an end (the last
  step, $TRAINKIT_DEADLINE, or both: the nearer) `eta_seconds`, the time left to it (steps left
  at this process's mean step time so far). These are rank 0's clock readings, logged only: they
  enter no checkpoint and no random stream. The logger is closed on the way out, also on error,
  so a blobfile run directory keeps every line.
- **Progress bar**: on rank 0, when stderr is a terminal and not `--no_progress`, a tqdm bar
  over the steps (to the last step when known) moves at every step; the log rows are written
  through it, so they never land inside the bar.
- **Quality probe** (`probe`, e.g. evaluations.probe.Probe: `.points`, `.num_samples`, and a
  call on images and labels that returns their FD and its std): at `points` evenly spaced
  points of the run's budget (the time to $TRAINKIT_DEADLINE when one is set, else the steps
  to `total_steps`), the last at its end (not after a signal), rank 0 alone samples
  `num_samples` images through `Task.probe_images` and writes a row of `QUALITY_FILE`: step,
  images seen, training seconds (the probes' own time left out), the probe's seconds, FD and
  its std. The other ranks go on to the next step's gradient sync and wait for rank 0 there.
"""

import sys
import time

from tqdm import tqdm

from . import checkpoint, dist, rng, run, stop
from .errors import UserError
from .quality import QUALITY_COLUMNS, QUALITY_FILE, ProbeSchedule  # noqa: F401 (re-export)
from .replicas import check_consistency, parameter_fingerprint  # noqa: F401 (re-export)
from .stepstats import _BAD_BASE, StepStats  # noqa: F401 (re-export)
from .vote import MAX_VOTE_GAP_S, VOTE_SHARE, StopVote, vote_interval  # noqa: F401 (re-export)


def _now() -> float:
    """The clock of the speed columns (a function, so that tests can drive it)."""
    return time.perf_counter()


def total_steps(*limits):
    """The last step: the smallest of the positive `limits`, or None (train until stopped)."""
    positive = [int(x) for x in limits if x]
    return min(positive) if positive else None



class TrainingDiverged(UserError):
    """A loss that is not finite outside fp16: the run stops, keeping the last good checkpoint."""


class Task:
    """What a family supplies to `Loop` (see the module docstring). Defaults cover the optional
    parts.

    `loss_keys` / `discriminator_keys`: the logged keys (of `step`'s stats) that are this Task's
    losses, and those of them (or others) that are a discriminator's; the loop records both in
    the run's options.json, where evaluation reads them instead of guessing from key names."""

    loss_keys = ()
    discriminator_keys = ()

    def step(self, batch, step: int, epoch: int) -> dict:
        raise NotImplementedError

    def state_dicts(self) -> dict:
        raise NotImplementedError

    def load_state_dicts(self, ck) -> None:
        raise NotImplementedError

    def modules(self) -> dict:
        raise NotImplementedError

    def trainer_state(self) -> dict:
        return {}

    def sample_weights(self, step: int) -> str:
        return "model"

    def log_extras(self) -> dict:
        return {}

    def artefacts(self, run_dir: str, step: int) -> None:
        pass

    def epoch_end(self, run_dir: str, epoch: int, step: int) -> None:
        pass

    def after_step(self, run_dir: str, step: int) -> None:
        """After every step, on every rank (rank 0 writes): files kept between checkpoints, e.g.
        the power-function EMA snapshots (trainkit.phema)."""

    def probe_images(self, weights: dict, n: int, seed: int):
        raise NotImplementedError(f"{type(self).__name__} has no quality probe")



class Loop:
    def __init__(self, run_, task: Task, batches, *, total_steps=None, log_interval=10, save_interval=0,
                 epoch_save=None, precision="fp32", resume_flag="--resume_checkpoint", seed=0, probe=None,
                 progress=None):
        """`run_` is the `run.Run` of `run.setup`; `batches` a `trainkit.data.Batches`.
        `epoch_save(epoch)` says whether the end of that epoch gets a checkpoint; `probe` the
        quality probe (see the module docstring) or None; `progress` whether a terminal gets the
        progress bar (default: unless the run's options say `no_progress`)."""
        self.run = run_
        self.logger = run_.logger
        self.task = task
        self.batches = batches
        self.total = total_steps
        self.log_interval = int(log_interval)
        self.save_interval = int(save_interval or 0)
        self.epoch_save = epoch_save
        self.fp16 = precision == "fp16"
        self.resume_flag = resume_flag
        self.seed = int(seed)
        self.step = 0
        self.last_saved = None
        self.last_saved_dir = run_.dir
        self.stats = StepStats()
        self.votes = StopVote()
        self.quality = ProbeSchedule(probe, self.logger)  # trainkit.quality: when rank 0 probes
        options = getattr(run_, "options", None) or {}
        self.progress = not options.get("no_progress", False) if progress is None else bool(progress)
        self._bar = None
        self._began = self._row_at = (_now(), 0)  # (clock, step): this process's start, the last row

    @property
    def images_per_step(self) -> int:
        return self.batches.batch_size * dist.world_size()
    @property
    def vote_every(self) -> int:
        """Steps to the next stop vote, as the last vote agreed."""
        return self.votes.every

    # ----- the loop ------------------------------------------------------------------------

    def run_loop(self) -> int:
        """Resume, train to `total_steps` or a stop, and return the last step."""
        try:
            self._record_declarations()
            self.resume()
            start = self.step
            if self.total is not None and self.step >= self.total:
                self.logger.log(f"step {self.step} is already at or past the last step {self.total}: "
                                "nothing to train")
                return self.step
            self.quality.plan(start, self.total)
            self._began = self._row_at = (_now(), self.step)
            self._open_bar()
            stopped = self._train()
            if self.step > start and self.last_saved != self.step:
                self._checked_save()
            if (self.quality.probe is not None and self.step > start and not stop.signalled()
                    and self.quality.last != self.step):
                self._run_probe()  # the end of the budget (a deadline or the last step), not a signal
            if stopped:
                self.logger.log(stop.stopped_message(self.step, self.run.dir, self.resume_flag))
            return self.step
        finally:
            self._close_bar()
            self.logger.close()

    # ----- resume --------------------------------------------------------------------------

    def _record_declarations(self) -> None:
        """The Task's loss and discriminator keys into the run's options.json (rank 0; only the
        file run.setup wrote for this run: a user's options file is never rewritten)."""
        if dist.is_main():
            with dist.rank_zero_only("loop: options.json"):
                run.record_options(self.run, loss_keys=list(self.task.loss_keys),
                                   discriminator_keys=list(self.task.discriminator_keys))

    def resume(self) -> None:
        ck = self.run.resume
        if ck is None:
            return
        self.logger.log(f"resuming from {ck.dir} step {ck.step} ({', '.join(ck.prefixes())})")
        self.task.load_state_dicts(ck)
        self.step = int(ck.step)
        self.last_saved, self.last_saved_dir = self.step, ck.dir
        state = ck.state or {}
        world = dist.world_size()
        saved_world = int(state.get("world_size", len(state.get("rng", ())) or 0))
        if saved_world == world and "data" in state and "rng" in state:
            self.batches.load_state_dict(state["data"])
            rng.set_rng_state(state["rng"])
            return
        # The world-size policy: re-derive what cannot be restored, deterministically.
        data = state.get("data", {"batches": self.step})
        old_global = int(data.get("global_batch", self.batches.batch_size * (saved_world or world)))
        where = self.batches.rederive(int(data["batches"]), old_global)
        rng.reseed(self.seed, self.step)
        if "rng" in state:
            what, caveat = (f"checkpoint written by {saved_world} rank(s), this run has {world}",
                            f"deterministic, but not bit-identical to a run that kept {saved_world} rank(s)")
        else:
            what, caveat = "checkpoint without trainer state (openai layout)", "deterministic"
        self.logger.log(f"{what}: data position re-derived ({where}) and every rank re-seeded from "
                        f"(--seed, step {self.step}, rank); {caveat}")

    def _train(self) -> bool:
        next_vote = self.step + 1
        while self.total is None or self.step < self.total:
            epoch = self.batches.epoch
            batch = next(self.batches)
            stats = self.task.step(batch, self.step, epoch)
            self.step += 1
            self.task.after_step(self.run.dir, self.step)
            if self._bar is not None:
                self._bar.update(1)
            self.votes.stepped()
            self.stats.add(stats, self.step)
            if self.quality.reached(self.step):
                self._run_probe()
            if self.batches.epoch != epoch:
                self.task.epoch_end(self.run.dir, epoch, self.step)
            last = self.total is not None and self.step >= self.total
            log_due = self.step % self.log_interval == 0 or last
            save_due = (bool(self.save_interval) and self.step % self.save_interval == 0) or last or (
                self.epoch_save is not None and self.batches.epoch != epoch and self.epoch_save(epoch))
            if not (log_due or save_due or self.step >= next_vote):
                continue
            stop = self._vote()  # collective, at the same step on every rank
            next_vote = self.step + self.votes.every
            if log_due or stop:
                self._dump()
            if save_due or stop:
                self._checked_save()
            if stop:
                return True
        return False

    def _vote(self) -> bool:
        """All ranks agree on: stop?, the first non-finite step (the non-finite policy), and the
        next vote's distance."""
        stopping, first = self.votes.vote(self.stats.bad_code())
        if first is not None:
            if not self.fp16:
                where = (f"the last good checkpoint is step {self.last_saved} in {self.last_saved_dir}"
                         if self.last_saved is not None else "no checkpoint was written")
                self.logger.log(f"loss is not finite at step {first}")
                raise TrainingDiverged(f"loss is not finite at step {first}: stopped without saving; {where} "
                                       "(try a lower learning rate, or --precision fp32)")
            self.logger.log(f"fp16: a loss was not finite at step {first} (the step was skipped and the loss "
                            "scale lowered); left out of the logged means")
            self.stats.clear_bad()
        return stopping

    def _dump(self) -> None:
        for key, (total, count) in self.stats.pop().items():
            self.logger.logkv_sum(key, total, count)
        self.logger.logkv("step", self.step)
        self.logger.logkv("samples", self.step * self.images_per_step)
        for key, value in self._speed().items():
            self.logger.logkv(key, value)
        for key, value in self.task.log_extras().items():
            self.logger.logkv(key, value)
        self.logger.dumpkvs()

    def _checked_save(self) -> None:
        check_consistency(self.task.modules(), self.step)
        self.task.artefacts(self.run.dir, self.step)
        state = dict(self.task.trainer_state())
        state.update({
            "rng": rng.rng_state(),  # collective
            "data": dict(self.batches.state_dict(), global_batch=self.images_per_step),
            "world_size": dist.world_size(),
            "sample_weights": self.task.sample_weights(self.step),
        })
        checkpoint.save(self.run.dir, self.step, self.task.state_dicts(), state)
        self.last_saved, self.last_saved_dir = self.step, self.run.dir
        self.logger.log(f"saved checkpoint of step {self.step} in {self.run.dir}")

    def _run_probe(self) -> None:
        self.quality.run(self.task, self.step, self.images_per_step, self.seed, self.run.dir)

    # ----- what a person watches -----------------------------------------------------------

    def _open_bar(self) -> None:
        if not (self.progress and dist.is_main() and getattr(sys.stderr, "isatty", lambda: False)()):
            return
        self._bar = tqdm(total=self.total, initial=self.step, unit="step", desc="training", file=sys.stderr,
                         dynamic_ncols=True)
        self.logger.attach_bar(self._bar)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self.logger.attach_bar(None)
            self._bar.close()
            self._bar = None

    def _eta(self, now: float):
        """Seconds to the nearer end of the run, or None when it has none."""
        left = []
        t0, s0 = self._began
        if self.total is not None and self.step > s0:
            left.append((self.total - self.step) * (now - t0) / (self.step - s0))
        limit = stop.deadline()
        if limit is not None:
            left.append(max(limit - time.time(), 0.0))
        return min(left) if left else None

    def _speed(self) -> dict:
        """The speed columns of the row that closes now (see the module docstring)."""
        now = _now()
        t0, s0 = self._row_at
        self._row_at = (now, self.step)
        out = {}
        if self.step > s0:
            seconds = max(now - t0, 1e-9)
            out = {"sec_per_step": seconds / (self.step - s0),
                   "img_per_sec": (self.step - s0) * self.images_per_step / seconds}
        eta = self._eta(now)
        if eta is not None:
            out["eta_seconds"] = eta
        if self._bar is not None and "img_per_sec" in out:
            note = f"{out['img_per_sec']:.4g} img/s"
            self._bar.set_postfix_str(note + (f", eta {tqdm.format_interval(eta)}" if eta is not None else ""),
                                      refresh=False)
        return out
