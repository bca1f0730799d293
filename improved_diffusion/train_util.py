"""The training loop: microbatches, precision, EMA, lr anneal, logging, checkpoints, resume.

Differences from openai/improved-diffusion's TrainLoop, each deliberate:
- microbatch gradients are averaged (openai sums them, so the effective lr grew with the
  number of microbatches); DDP synchronises only on the last microbatch;
- checkpoint N holds the weights after N optimizer steps (openai's model N is after N+1);
- the trainer state (RNG of every rank, data position, schedule-sampler history, loss scale)
  is checkpointed too, so a resumed run continues bit for bit;
- a non-finite loss stops the run without saving (fp16 instead skips the step and lowers the
  loss scale); the previous checkpoint stays the newest complete one;
- every collective runs on every rank.
"""

import math

import torch

from trainkit import checkpoint, dist, ema, precision, run
from trainkit.errors import UserError

from .resample import LossAwareSampler, UniformSampler


class TrainLoop:
    def __init__(self, *, model, diffusion, data, batch_size, microbatch, lr, ema_rate, log_interval,
                 save_interval, resume_checkpoint, logger, run_dir, precision_mode="fp32", fp16_scale_growth=1e-3,
                 schedule_sampler=None, weight_decay=0.0, lr_anneal_steps=0, max_steps=0):
        self.device = dist.device()
        self.model = model.to(self.device)
        self.diffusion = diffusion
        self.data = data
        self.batch_size = batch_size
        self.microbatch = microbatch if microbatch > 0 else batch_size
        self.lr = lr
        self.log_interval = log_interval
        self.save_interval = save_interval
        self.logger = logger
        self.run_dir = run_dir
        self.schedule_sampler = schedule_sampler or UniformSampler(diffusion)
        self.lr_anneal_steps = lr_anneal_steps
        self.max_steps = max_steps
        self.global_batch = batch_size * dist.world_size()
        self.step = 0
        self.last_saved = None

        # DDP broadcasts rank 0's weights, so every copy below (EMA, optimizer) starts equal.
        self.ddp_model = dist.wrap_ddp(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        # openai raises log2(scale) by fp16_scale_growth per good step: one doubling every
        # 1/growth steps, which is GradScaler's growth_interval.
        growth_interval = max(1, round(1.0 / fp16_scale_growth)) if fp16_scale_growth > 0 else 10**9
        self.precision = precision.Precision(precision_mode, self.device, init_scale=2.0**20,
                                             growth_interval=growth_interval)
        self.ema = ema.EMA(self.model, ema_rate)
        if resume_checkpoint:
            self._resume(resume_checkpoint)

    # ----- checkpoints ---------------------------------------------------------------------

    def _resume(self, ck):
        if not isinstance(ck, checkpoint.Checkpoint):  # a path: a run directory or a step's file
            ck = checkpoint.resolve(ck)
        self.logger.log(f"resuming from {ck.dir} step {ck.step} ({', '.join(ck.prefixes())})")
        self._load_model_state(ck.path("model"))
        for rate in self.ema.rates:
            prefix = f"ema_{ema.rate_name(rate)}_"
            if ck.has(prefix):
                self.ema.load_state_dict(rate, self._checked(ck.load(prefix), ck.path(prefix)))
            else:
                self.logger.log(f"no {prefix} file at step {ck.step}: EMA {rate} restarts from the model weights")
                self.ema.load_state_dict(rate, self.model.state_dict())
        if ck.has("opt"):
            try:
                self.opt.load_state_dict(ck.load("opt"))
            except (ValueError, KeyError) as e:
                raise UserError(f"{ck.path('opt')}: does not fit this model's optimizer ({e})") from None
        self.step = ck.step
        state = ck.state
        if state is None:  # a run directory written by openai's code: weights only
            return
        if "rng" in state:
            if len(state["rng"]) == dist.world_size():
                run.set_rng_state(state["rng"])
            else:
                self.logger.log(f"checkpoint has RNG states of {len(state['rng'])} ranks, this run has "
                                f"{dist.world_size()}: keeping fresh seeds (not bit-identical to a straight run)")
        if "data" in state:
            self.data.load_state_dict(state["data"])
        if "schedule_sampler" in state:
            self.schedule_sampler.load_state_dict(state["schedule_sampler"])
        if "precision" in state:
            self.precision.load_state_dict(state["precision"])

    def _checked(self, state_dict, path):
        expected = self.model.state_dict()
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        bad_shape = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or bad_shape:
            detail = "; ".join(f"{name}: {', '.join(keys[:3])}" for name, keys in
                               (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)) if keys)
            raise UserError(f"{path}: does not match the model flags ({detail})")
        return state_dict

    def _load_model_state(self, path):
        sd = self._checked(checkpoint.load(path), path)
        self.model.load_state_dict(sd, strict=True)

    def save(self):
        states = {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
        for rate in self.ema.rates:
            states[f"ema_{ema.rate_name(rate)}_"] = self.ema.state_dict(rate, self.model)
        states["opt"] = self.opt.state_dict()
        trainer_state = {
            "rng": run.rng_state(),  # collective
            "data": self.data.state_dict(),
            "schedule_sampler": self.schedule_sampler.state_dict(),
            "precision": self.precision.state_dict(),
            "global_batch": self.global_batch,
        }
        checkpoint.save(self.run_dir, self.step, states, trainer_state)
        self.last_saved = self.step
        self.logger.log(f"saved checkpoint of step {self.step} in {self.run_dir}")

    # ----- the loop ------------------------------------------------------------------------

    def _done(self):
        limits = [s for s in (self.lr_anneal_steps, self.max_steps) if s]
        return bool(limits) and self.step >= min(limits)

    def run_loop(self):
        """Train until --max_steps / --lr_anneal_steps (never, like openai, when both are 0)
        or a signal; the final step is always checkpointed."""
        while not self._done():
            batch, cond = next(self.data)
            self.run_step(batch, cond)
            # Checked after the step, as every family does: a signal or $TRAINKIT_DEADLINE ends
            # the run at a completed step, so a deadline already past still trains one step.
            stop = run.should_stop()  # collective
            if self.step % self.log_interval == 0 or stop:
                self.logger.dumpkvs()
            if self.step % self.save_interval == 0 or stop:
                self.save()
            if stop:
                self.logger.log(run.stopped_message(self.step, self.run_dir))
                break
        if self.last_saved != self.step:
            self.save()

    def run_step(self, batch, labels):
        loss_sum = self.forward_backward(batch, labels)
        # Every rank must agree before anything is stepped or saved.
        finite = dist.all_reduce_sum(0.0 if math.isfinite(loss_sum) else 1.0) == 0
        if not finite and self.precision.mode != "fp16":
            self.opt.zero_grad(set_to_none=True)
            where = (f"the last good checkpoint is step {self.last_saved} in {self.run_dir}"
                     if self.last_saved is not None else "no checkpoint was written")
            raise TrainingDiverged(f"loss is not finite at step {self.step + 1}: stopped without saving; {where} "
                                   f"(try a lower --lr, or --precision fp32)")
        self._anneal_lr()
        if self.precision.mode == "fp16":
            self.precision.unscale_(self.opt)
        self._log_grad_norm()
        stepped = self.precision.step(self.opt)
        self.opt.zero_grad(set_to_none=True)
        if stepped:
            self.ema.update(self.model)
        else:
            self.logger.log(f"fp16: non-finite gradients at step {self.step + 1}, step skipped, "
                            f"loss scale lowered to {self.precision.scale:g}")
        self.step += 1
        self.logger.logkv("step", self.step)
        self.logger.logkv("samples", self.step * self.global_batch)
        if self.precision.mode == "fp16":
            self.logger.logkv("lg_loss_scale", math.log2(max(self.precision.scale, 1e-30)))

    def forward_backward(self, batch, labels):
        """Accumulate the gradient of the batch mean over microbatches; returns the loss sum."""
        total = 0.0
        n = batch.shape[0]
        for i in range(0, n, self.microbatch):
            micro = batch[i:i + self.microbatch].to(self.device)
            kwargs = {} if labels is None else {"y": labels[i:i + self.microbatch].to(self.device)}
            last = i + self.microbatch >= n
            t, weights = self.schedule_sampler.sample(micro.shape[0], self.device)
            sync = last or not hasattr(self.ddp_model, "no_sync")
            with (_nullcontext() if sync else self.ddp_model.no_sync()):
                with self.precision.autocast():
                    losses = self.diffusion.training_losses(self.ddp_model, micro, t, model_kwargs=kwargs)
                if isinstance(self.schedule_sampler, LossAwareSampler):
                    self.schedule_sampler.update_with_local_losses(t, losses["loss"].detach())  # collective
                # Weighted so that the microbatch gradients add up to the gradient of the batch mean.
                loss = (losses["loss"] * weights).mean() * (micro.shape[0] / n)
                self.precision.backward(loss)
            total += float(loss.detach())
            log_loss_dict(self.logger, self.diffusion, t, {k: v * weights for k, v in losses.items()})
        return total

    def _anneal_lr(self):
        if not self.lr_anneal_steps:
            return
        lr = self.lr * (1 - self.step / self.lr_anneal_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr

    def _log_grad_norm(self):
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            self.logger.logkv_mean("grad_norm", torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item())


class TrainingDiverged(UserError):
    """A non-finite loss outside fp16: the run stops, keeping the last good checkpoint."""


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def log_loss_dict(logger, diffusion, ts, losses):
    """Mean of each loss term, and its mean per quarter of the timesteps (key_q0..key_q3)."""
    ts = ts.detach().cpu().tolist()
    for key, values in losses.items():
        values = values.detach().float().cpu()
        logger.logkv_mean(key, values.mean().item())
        for t, v in zip(ts, values.tolist()):
            logger.logkv_mean(f"{key}_q{int(4 * t / diffusion.num_timesteps)}", v)
