"""improved_diffusion's trainkit.loop.Task (one optimizer step: microbatches, precision, EMA, lr
anneal; what a checkpoint holds; the quality probe) and `build_task`, which builds it from the
train flags for improved_diffusion.train and the benchmarks alike.

Differences from openai/improved-diffusion's TrainLoop, each deliberate:
- microbatch gradients are averaged (openai sums them, so the effective lr grew with the
  number of microbatches); DDP synchronises only on the last microbatch;
- checkpoint N holds the weights after N optimizer steps (openai's model N is after N+1);
- the trainer state (RNG of every rank, data position, schedule-sampler history, loss scale)
  is checkpointed too, so a resumed run continues bit for bit;
- the loss terms are summed on the device and logged once per log interval (openai reads
  every microbatch's losses back to the host).
The loop itself (resume, logging, stopping, checkpoints, the non-finite policy) is trainkit.loop;
the EMA files and the loss-scale state go through trainkit.ema and trainkit.precision, as for
every family.
"""

import copy
import math

import torch

from trainkit import checkpoint, dist, ema, loop, optim, phema, precision, run, sampling

from .cli import create_model_and_diffusion_checked
from .draw import draw, invariant_block
from .resample import LossAwareSampler, UniformSampler, create_named_schedule_sampler

# the optimizer's name in the state file's precision entry and the logged loss_scale_<name>
OPTIMIZER = "model"
# the probe's sampler: DDIM's ODE at 10 steps from t = T-1 (the comparison's ddim-10)
PROBE_SAMPLER, PROBE_STEPS = "ddim", 10


class Task(loop.Task):
    loss_keys = ("loss",)  # the total; its terms (mse, vb) and quarters are logged beside it

    def __init__(self, *, model, diffusion, microbatch=-1, lr=1e-4, ema_rate="0.9999", precision_mode="fp32",
                 fp16_scale_growth=1e-3, schedule_sampler=None, weight_decay=0.0, lr_anneal_steps=0, log=print,
                 probe_shape=None, class_dropout_prob=0.0, compile=False):
        self.device = dist.device()
        if class_dropout_prob and getattr(model, "null_class", None) is None:
            raise ValueError("--class_dropout_prob needs a model with a null class (built with it)")
        self.class_dropout_prob = class_dropout_prob
        self.model = model.to(self.device)
        self.diffusion = diffusion
        self.microbatch = microbatch
        self.lr = lr
        self.schedule_sampler = schedule_sampler or UniformSampler(diffusion)
        self.lr_anneal_steps = lr_anneal_steps
        self.log = log
        self.probe_shape = probe_shape  # (C, H, W) of the quality probe's samples
        # DDP broadcasts rank 0's weights, so every copy below (EMA, optimizer) starts equal.
        self.ddp_model = dist.wrap_ddp(self.model)
        # --compile: only the training forward is compiled; self.model (saved, EMA'd) stays eager
        self.ddp_model = run.compiled(self.ddp_model, compile)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        # openai raises log2(scale) by fp16_scale_growth per good step: one doubling every
        # 1/growth steps, which is GradScaler's growth_interval.
        growth_interval = max(1, round(1.0 / fp16_scale_growth)) if fp16_scale_growth > 0 else 10**9
        self.precision = precision.Precision(precision_mode, self.device, init_scale=2.0**20,
                                             growth_interval=growth_interval)
        self.ema = ema.EMA(self.model, ema_rate)

    # ----- one step ------------------------------------------------------------------------

    def step(self, batch, step, epoch):
        x, labels = batch
        self._anneal_lr(step)
        stats = self.forward_backward(x, labels)
        _, done = optim.finish_step(self.opt, self.precision, self.model, ema=self.ema, log=self.log, step=step + 1)
        self.opt.zero_grad(set_to_none=True)
        stats.update(done)
        return stats

    def forward_backward(self, batch, labels):
        """Accumulate the gradient of the batch mean over microbatches; returns the loss terms
        as device statistics (see log_loss_dict)."""
        n = batch.shape[0]
        micro = self.microbatch if self.microbatch > 0 else n
        stats = {}
        if labels is not None and self.class_dropout_prob:
            labels = self.drop_labels(labels)
        for i in range(0, n, micro):
            x = batch[i:i + micro].to(self.device)
            kwargs = {} if labels is None else {"y": labels[i:i + micro].to(self.device)}
            t, weights = self.schedule_sampler.sample(x.shape[0], self.device)
            with dist.ddp_sync(self.ddp_model, sync=i + micro >= n):
                with self.precision.autocast():
                    losses = self.diffusion.training_losses(self.ddp_model, x, t, model_kwargs=kwargs)
                if isinstance(self.schedule_sampler, LossAwareSampler):
                    self.schedule_sampler.update_with_local_losses(t, losses["loss"].detach())  # collective
                # Weighted so that the microbatch gradients add up to the gradient of the batch mean.
                loss = (losses["loss"] * weights).mean() * (x.shape[0] / n)
                self.precision.backward(loss)
            log_loss_dict(stats, self.diffusion, t, {k: v * weights for k, v in losses.items()})
        return stats

    def drop_labels(self, labels):
        """Classifier-free guidance's training (Ho & Salimans 2022): each label becomes the null
        class with probability class_dropout_prob. Drawn from torch's generator (checkpointed
        with the trainer state, so a resumed run draws the same); with probability 0 nothing is
        drawn and a step is bit for bit openai's."""
        drop = torch.rand(labels.shape[0]) < self.class_dropout_prob
        return torch.where(drop, torch.full_like(labels, self.model.null_class), labels)

    def _anneal_lr(self, step):
        if not self.lr_anneal_steps:
            return
        lr = self.lr * (1 - step / self.lr_anneal_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr

    # ----- what the loop saves and restores ------------------------------------------------

    def modules(self):
        return {"model": self.model}

    def state_dicts(self):
        states = {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
        states.update(ema.save_states(self.model, self.ema))
        states["opt"] = self.opt.state_dict()
        return states

    def trainer_state(self):
        return {"schedule_sampler": self.schedule_sampler.state_dict(),
                "precision": precision.state_dict({OPTIMIZER: self.precision})}

    def load_state_dicts(self, ck):
        checkpoint.load_into(self.model, ck.load("model"), ck.path("model"), hint="check the model flags")
        ema.load_states(ck, self.model, self.ema, log=self.log)  # trainkit's missing-file policy
        if ck.has("opt"):
            checkpoint.load_optimizer(self.opt, ck.load("opt"), ck.path("opt"))
        state = ck.state or {}
        if "schedule_sampler" in state:
            self.schedule_sampler.load_state_dict(state["schedule_sampler"])
        precision.load_state_dict({OPTIMIZER: self.precision}, state)  # any of the older layouts too

    def sample_weights(self, step):
        """The settled EMA at `step` (trainkit.ema's rule, the one every sampler reads back
        through checkpoint.sampling_weights), else the model."""
        return ema.choose_sample_weights(step, fixed=self.ema)

    def probe_images(self, weights, n, seed):
        """n images of a copy of the model holding `weights` (eval mode), drawn by draw.draw, as
        `improved_diffusion.sample --sampler ddim --steps 10 --timestep_respacing ''` draws samples
        0..n-1 of `seed` (on the CPU in the same blocks of rows: the same images bit for bit)."""
        net = copy.deepcopy(self.model)
        net.load_state_dict(weights)
        net.eval()
        rnd = sampling.PerSampleRandom(seed, range(n), self.device)
        return draw(net, self.diffusion, rnd, self.probe_shape, sampler=PROBE_SAMPLER, steps=PROBE_STEPS,
                    num_classes=getattr(net, "num_classes", None), block=invariant_block(True, self.device))

    def log_extras(self):
        # loss_scale_model under fp16, the key every family logs per optimizer, and openai's own
        # lg_loss_scale (its log2) beside it: progress.csv files read by openai-era scripts keep it.
        values = precision.log_values({OPTIMIZER: self.precision})
        if values:
            values["lg_loss_scale"] = math.log2(max(self.precision.scale, 1e-30))
        return values


def log_loss_dict(stats, diffusion, ts, losses):
    """Add to `stats` (name -> (sum, count) on the device) each loss term's microbatch mean, and
    its per-image values by quarter of the timesteps (key_q0..key_q3), as openai logs them."""
    quarter = torch.div(4 * ts, diffusion.num_timesteps, rounding_mode="floor").clamp_(0, 3)
    # index_add_, not bincount: bincount reads the largest index back to size its output, a
    # host-device synchronisation on CUDA in every step
    counts = torch.zeros(4, dtype=torch.float64, device=ts.device).index_add_(
        0, quarter, torch.ones(quarter.shape, dtype=torch.float64, device=ts.device))
    for key, values in losses.items():
        values = values.detach().double()
        _add(stats, key, values.mean(), torch.ones((), dtype=torch.float64, device=values.device))
        sums = torch.zeros(4, dtype=torch.float64, device=values.device).index_add_(0, quarter, values)
        for q in range(4):
            _add(stats, f"{key}_q{q}", sums[q], counts[q])


def _add(stats, key, total, count):
    if key in stats:
        s, n = stats[key]
        stats[key] = (s + total, n + count)
    else:
        stats[key] = (total, count)


def build_task(args, model=None, diffusion=None, log=print):
    """The Task improved_diffusion.train trains, from its parsed flags (and the model and
    diffusion cli.create_model_and_diffusion_checked builds from them, built here when not
    given), with the power-function EMA profiles of --ema_std around it: what
    benchmarks/gpu_check.py and benchmarks/train_throughput.py measure, so they time the
    trainer's own construction, not a copy of it."""
    if model is None:
        model, diffusion = create_model_and_diffusion_checked(args)
    task = Task(
        model=model,
        diffusion=diffusion,
        microbatch=args.microbatch,
        lr=args.lr,
        ema_rate=args.ema_rate,
        precision_mode=args.precision or ("fp16" if args.use_fp16 else "fp32"),
        fp16_scale_growth=args.fp16_scale_growth,
        schedule_sampler=create_named_schedule_sampler(args.schedule_sampler, diffusion),
        weight_decay=args.weight_decay,
        lr_anneal_steps=args.lr_anneal_steps,
        log=log,
        probe_shape=(args.image_channels, args.image_size, args.image_size),
        class_dropout_prob=args.class_dropout_prob,
        compile=args.compile,
    )
    # power-function EMA profiles (docs/ema.md): trainkit adds them around the task
    return phema.with_power_ema(task, model, args.ema_std, args.ema_snapshot_interval,
                                args.batch_size * dist.world_size(), log=log)
