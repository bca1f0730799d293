"""DDGAN's trainkit.loop Task (one optimizer step: the D and G updates, lazy R1, EMA, cosine lr)
and `build_task`, which builds it from ddgan.train's flags for ddgan.train and the benchmarks
alike.

One optimizer step ("update"):
  D: real pairs (x_t, x_{t+1}) -> softplus(-D); every lazy_reg steps R1 = r1_gamma/2 E|grad_x_t D|^2;
     fake x_t ~ q(x_t | x_{t+1}, G(x_{t+1}, z, t)) with G under no_grad -> softplus(D).
     --d_steps K repeats this D update K times (fresh t and noises, the same images), R1 on
     all of them or none, before the one G update.
  G: softplus(-D(fake)) with D frozen. Adam(beta1, beta2) each; EMA of G after the G step;
  learning rates follow a cosine from lr to 1e-5 over num_epoch epochs (stepped per epoch).
--grad_accum K cuts the per-rank batch into K micro-batches whose gradients are averaged.
The losses (softplus forms of the bce loss), freezing D for G's step and R1 are trainkit.gan's.

Under --precision fp16 R1's input gradient is loss-scaled with D's own scale (trainkit.gan.
r1_penalty's precision=): unscaled it underflows once D's input gradients are below fp16's
subnormals (~6e-8) and R1 silently vanishes. The minibatch-std layer computes its statistics in
fp32 so that R1's double backward fits fp16 whenever D's loss backward does (see
ddgan.discriminator.minibatch_stddev).

Stabilisers shared with gans (off by default: the update is then the reference's, bit for bit):
--diffaug (trainkit.diffaug: D sees each pair (x_t, x_{t+1}) through one random draw of the
transforms, real and fake alike, differentiable for G's step), --ema_kimg / --ema_rampup (a
generator average with a half-life in images, trainkit.ema.HalfLifeEMA, sampled by default) and
--ema_std (power-function averages, trainkit.phema). Lazy R1 keeps the reference's weight (not
multiplied by --lazy_reg, unlike gans.train).

Checkpoint boilerplate is trainkit's: the averages' files and their missing-file policy
(trainkit.ema.save_states / load_states), the loss scales under one key per optimizer
(trainkit.precision, names "g" and "d", logged as loss_scale_g / loss_scale_d under fp16).
"""

import copy
import math

import torch

from trainkit import checkpoint, diffaug, dist, ema, gan, loop, optim, phema, precision, run, sampling
from trainkit.errors import UserError

from . import script_util
from .sample import draw

ETA_MIN = 1e-5


def cosine_lr(base, epoch, num_epoch, decay=True):
    """CosineAnnealingLR(T_max=num_epoch, eta_min=1e-5) after `epoch` scheduler steps."""
    if not decay:
        return base
    return ETA_MIN + (base - ETA_MIN) * (1 + math.cos(math.pi * epoch / num_epoch)) / 2


def set_lr(optimizer, lr):
    for g in optimizer.param_groups:
        g["lr"] = lr


def draw_step_noise(x, num_timesteps, nz):
    """Every random number one D or G half-step uses, drawn for the whole per-process batch in
    the reference's order (t, the q_sample_pairs noises, z, the posterior noise). Drawing them up
    front, then slicing, makes K micro-batches see exactly the numbers one batch would."""
    n = x.shape[0]
    return {
        "t": torch.randint(0, num_timesteps, (n,), device=x.device),
        "noise_next": torch.randn_like(x),
        "noise": torch.randn_like(x),
        "z": torch.randn(n, nz, device=x.device),
        "post_noise": torch.randn_like(x),
    }


r1_penalty = gan.r1_penalty  # R1 on real pairs (x_t the input it differentiates), shared with gans


def _micro(tensors, i, k):
    return {name: v.chunk(k)[i] for name, v in tensors.items()}


class Task(loop.Task):
    """The models, optimizers and one-update logic, as trainkit.loop's task."""

    # what the loop writes into options.json: the losses a report plots, and D's statistics
    loss_keys = ("errD", "errG")
    discriminator_keys = ("errD", "errD_real", "errD_fake", "r1", optim.D_ACCURACY, "grad_norm_d", "skipped_d")

    def __init__(self, o, generator, discriminator, diffusion, device, log=None):
        """`log(line)`: where resume notes go (an average restarted for a missing file)."""
        self.o = o
        self.diffusion = diffusion
        self.device = device
        self.log = log
        self.g_raw = generator.to(device)
        self.d_raw = discriminator.to(device)
        # Adam state and EMA are created from the raw modules; DDP broadcasts rank 0's weights
        self.G = dist.wrap_ddp(self.g_raw)
        self.D = dist.wrap_ddp(self.d_raw)
        # --compile: the networks' DDP-wrapped training forwards; g_raw/d_raw (saved, EMA'd,
        # called under no_grad or frozen) stay eager, so checkpoint keys are the reference's
        # R1 steps keep the eager D: aot_autograd has no double backward (R1's grad of a grad)
        self.D_eager = self.D
        self.G = run.compiled(self.G, bool(o.get("compile")))
        self.D = run.compiled(self.D, bool(o.get("compile")))
        self.opt_g = torch.optim.Adam(self.g_raw.parameters(), lr=o["lr_g"], betas=(o["beta1"], o["beta2"]))
        self.opt_d = torch.optim.Adam(self.d_raw.parameters(), lr=o["lr_d"], betas=(o["beta1"], o["beta2"]))
        self.prec_d = precision.Precision(o["precision"], device)
        self.prec_g = precision.Precision(o["precision"], device)
        # the reference's EMA starts from the weights after the first update
        self.ema = ema.EMA(self.g_raw, [o["ema_decay"]], copy_first=True) if o["use_ema"] else None
        images_per_step = o["batch_size"] * dist.world_size()
        kimg = o.get("ema_kimg") or 0.0
        self.halflife = ema.HalfLifeEMA(self.g_raw, kimg, o.get("ema_rampup"), images_per_step) if kimg else None
        stds = phema.parse_stds(o.get("ema_std") or "")
        self.power = phema.PowerEMA(self.g_raw, stds, images_per_step) if stds else None
        self.averages = ema.Chain(self.ema, self.halflife, self.power) or None
        self.diffaug = diffaug.parse_policy(o.get("diffaug") or "")
        self.updates = 0  # optimizer steps done
        self.epoch = 0
        self.files = None  # ddgan.experiment.ExperimentFiles in an --exp folder
        self.last_x_pos = None  # the last G step's posterior samples (the reference's xpos image)

    def r1_due(self):
        return gan.r1_due(self.updates, self.o["lazy_reg"])

    def d_input(self, x, x_tp1):
        """What D sees of a pair: as it is, or through one --diffaug draw for both halves."""
        return diffaug.augment(self.diffaug, x, x_tp1) if self.diffaug else (x, x_tp1)

    def d_step(self, x):
        o, diff, k = self.o, self.diffusion, self.o["grad_accum"]
        self.opt_d.zero_grad(set_to_none=True)
        rnd = draw_step_noise(x, diff.num_timesteps, o["nz"])
        with_r1 = self.r1_due()
        D = self.D_eager if with_r1 else self.D
        totals = {"errD_real": 0.0, "errD_fake": 0.0, "r1": 0.0, optim.D_ACCURACY: 0.0}
        for i, (xb, r) in enumerate(zip(x.chunk(k), [_micro(rnd, i, k) for i in range(k)])):
            with dist.ddp_sync(self.D, i == k - 1):
                x_t, x_tp1 = diff.q_sample_pairs(xb, r["t"], r["noise"], r["noise_next"])
                x_t.requires_grad_(True)
                with self.prec_d.autocast():
                    a_t, a_tp1 = self.d_input(x_t, x_tp1)
                    d_real = D(a_t, r["t"], a_tp1).view(-1)
                    err_real = gan.d_loss_real(d_real)
                loss = err_real
                if with_r1:
                    # loss-scaled under fp16 with D's scale (unscaled, it underflows to 0)
                    r1 = r1_penalty(d_real, x_t, o["r1_gamma"], self.prec_d)
                    loss = loss + r1
                    totals["r1"] += r1.detach() / k
                with torch.no_grad():  # the generator is not trained by D's loss
                    x0_pred = self.g_raw(x_tp1, r["t"], r["z"])
                x_pos = diff.sample_posterior(x0_pred, x_tp1, r["t"], r["post_noise"])
                with self.prec_d.autocast():
                    a_pos, a_tp1 = self.d_input(x_pos, x_tp1)
                    d_fake = D(a_pos, r["t"], a_tp1).view(-1)
                    err_fake = gan.d_loss_fake(d_fake)
                loss = loss + err_fake
                self.prec_d.backward(loss / k)
            totals["errD_real"] += err_real.detach().float() / k
            totals["errD_fake"] += err_fake.detach().float() / k
            totals[optim.D_ACCURACY] += optim.d_accuracy(d_real, d_fake) / k
        _, done = optim.finish_step(self.opt_d, self.prec_d, self.d_raw, suffix="_d")
        totals.update(done)
        totals["errD"] = totals["errD_real"] + totals["errD_fake"]
        if not with_r1:
            del totals["r1"]
        return totals

    def g_step(self, x):
        o, diff, k = self.o, self.diffusion, self.o["grad_accum"]
        self.opt_g.zero_grad(set_to_none=True)
        rnd = draw_step_noise(x, diff.num_timesteps, o["nz"])
        err_total = 0.0
        x_pos_parts = []
        # D's own module, frozen (and put back in a finally): its weights do not change here,
        # so there is nothing to synchronise and no D gradient to build
        with gan.frozen(self.d_raw) as d_frozen:
            for i, xb in enumerate(x.chunk(k)):
                r = _micro(rnd, i, k)
                with dist.ddp_sync(self.G, i == k - 1):
                    _, x_tp1 = diff.q_sample_pairs(xb, r["t"], r["noise"], r["noise_next"])
                    with self.prec_g.autocast():
                        x0_pred = self.G(x_tp1, r["t"], r["z"])
                    x_pos = diff.sample_posterior(x0_pred.float(), x_tp1, r["t"], r["post_noise"])
                    with self.prec_g.autocast():
                        a_pos, a_tp1 = self.d_input(x_pos, x_tp1)
                        err = gan.g_loss(d_frozen(a_pos, r["t"], a_tp1).view(-1))
                    self.prec_g.backward(err / k)
                err_total += err.detach().float() / k
                x_pos_parts.append(x_pos.detach())
        self.last_x_pos = torch.cat(x_pos_parts)
        _, done = optim.finish_step(self.opt_g, self.prec_g, self.g_raw, ema=self.averages)
        return {"errG": err_total, **done}

    def update(self, x):
        # the losses are the last D update's; D's accuracy is the first's, read before D has
        # updated on these images (later updates see them again: in-sample, biased up)
        stats = self.d_step(x)
        accuracy = stats[optim.D_ACCURACY]
        for _ in range(self.o["d_steps"] - 1):
            stats = self.d_step(x)
        stats[optim.D_ACCURACY] = accuracy
        stats.update(self.g_step(x))
        self.updates += 1
        return stats

    # what trainkit.loop calls --------------------------------------------------------------
    def step(self, batch, step, epoch):
        # the reference steps its cosine schedulers once per epoch
        decay = not self.o["no_lr_decay"]
        set_lr(self.opt_g, cosine_lr(self.o["lr_g"], epoch, self.o["num_epoch"], decay))
        set_lr(self.opt_d, cosine_lr(self.o["lr_d"], epoch, self.o["num_epoch"], decay))
        self.updates, self.epoch = step, epoch
        return self.update(batch[0].to(self.device))

    def epoch_end(self, run_dir, epoch, step):
        if self.files is not None:
            self.files.epoch_end(self, run_dir, epoch, step)

    def scalers(self):
        """The loss scales by optimizer name (trainkit.precision's state layout and log keys)."""
        return {"g": self.prec_g, "d": self.prec_d}

    def log_extras(self):
        return {"epoch": self.epoch, "lr_g": self.opt_g.param_groups[0]["lr"],
                **precision.log_values(self.scalers())}  # loss_scale_g / loss_scale_d under fp16

    def modules(self):
        return {"generator": self.g_raw, "discriminator": self.d_raw}

    def ema_prefix(self):
        return ema.prefix(self.o["ema_decay"])

    def sample_weights(self, step):
        # trainkit.ema's rule, recorded in every state file for checkpoint.sampling_weights; the
        # --use_ema average whatever the step (settle=False), as the reference samples it
        return ema.choose_sample_weights(step, fixed=self.ema, halflife=self.halflife, power=self.power,
                                         settle=False)

    def after_step(self, run_dir, step):
        phema.snapshot_due(self.power, self.o.get("ema_snapshot_interval") or 0, run_dir, step, self.g_raw)

    def artefacts(self, run_dir, step):
        phema.snapshot_due(self.power, self.o.get("ema_snapshot_interval") or 0, run_dir, step, self.g_raw,
                           checkpoint=True)

    def state_dicts(self):
        return {"model": self.g_raw.state_dict(), "opt": self.opt_g.state_dict(),
                "disc": self.d_raw.state_dict(), "disc_opt": self.opt_d.state_dict(),
                **ema.save_states(self.g_raw, self.ema, self.halflife, self.power)}

    def probe_images(self, weights, n, seed):
        """n images of a copy of the generator holding `weights` (eval mode, as ddgan.sample),
        drawn by ddgan.sample's own `draw` for indices 0..n-1 (the same noise as the sampler's)."""
        g = copy.deepcopy(self.g_raw)
        g.load_state_dict(checkpoint.strip_wrapper_prefixes(weights))
        g.eval()
        o = self.o
        return draw(g, self.diffusion, sampling.PerSampleRandom(seed, range(n), self.device),
                    (o["num_channels"], o["image_size"], o["image_size"]), o["nz"])

    def trainer_state(self):
        return {"epoch": self.epoch, "precision": precision.state_dict(self.scalers()),
                **ema.averages_state(self.ema, self.halflife, self.power)}

    def load_state_dicts(self, ck):
        script_util.load_weights(self.g_raw, ck.load("model"), ck.path("model"))
        script_util.load_weights(self.d_raw, ck.load("disc"), ck.path("disc"), "discriminator")
        checkpoint.load_optimizer(self.opt_g, ck.load("opt"), ck.path("opt"))
        d_opt = "disc_opt" if ck.has("disc_opt") or not ck.has("opt_disc") else "opt_disc"  # the name before
        checkpoint.load_optimizer(self.opt_d, ck.load(d_opt), ck.path(d_opt))
        # after the generator's weights: an average whose file the step lacks restarts from
        # them, with one logged line (trainkit.ema's one missing-file policy)
        ema.load_states(ck, self.g_raw, self.ema, self.halflife, self.power, log=self.log)
        self.updates = ck.step
        # the layout precision: {g, d}, and the one before it (precision_g / precision_d)
        precision.load_state_dict(self.scalers(), ck.state)


# ddgan.trainer's name for the Task, kept for the scripts and tests that import it
Trainer = Task


def resolve_ema_flags(o):
    """trainkit's --ema_rate R, in the reference's spelling: --use_ema --ema_decay R (DDGAN keeps
    one generator EMA, the one its netG files hold). Sets use_ema/ema_decay in `o` from it (so
    options.json says what was trained); more than one rate, or a different --use_ema
    --ema_decay beside it, is one line."""
    rates = ema.parse_rates(o.get("ema_rate") or "")
    if not rates:
        return o
    if len(rates) > 1:
        raise UserError(f"--ema_rate {o['ema_rate']}: DDGAN keeps one generator EMA (the reference's --use_ema "
                        "--ema_decay R): give one rate")
    if o["use_ema"] and o["ema_decay"] != rates[0]:
        raise UserError(f"--ema_rate {o['ema_rate']} and --use_ema --ema_decay {o['ema_decay']} name two EMAs: "
                        "give one of them")
    o["use_ema"], o["ema_decay"] = True, rates[0]
    return o


def build_task(args, log=None):
    """The Task ddgan.train trains, from its parsed flags (ddgan.train.create_parser):
    benchmarks/gpu_check.py and benchmarks/train_throughput.py build theirs here too, so they
    time the trainer's own construction."""
    o = resolve_ema_flags(vars(args))
    return Task(o, script_util.build_generator(o), script_util.build_discriminator(o),
                script_util.build_diffusion(o), dist.device(), log=log)
