"""The gans family's trainkit.loop Task (one GAN optimisation step of any kind of gans.models: a
discriminator update, then a generator update) and `build_task`, which builds it from
gans.train's flags for gans.train and the benchmarks alike.

The two updates are kept strictly apart:
- D step: G runs under no_grad as its raw module (outside DDP), so no G gradient exists and
  only D's optimizer steps. G stays in train mode (batch statistics, as the paper trains it),
  which also moves its BatchNorm running statistics: buffers, not weights.
- G step: D's parameters are frozen (requires_grad False) and D runs as its raw module, so
  the loss gradient flows through D into G without touching D's .grad or DDP's reducer, and
  only G's optimizer steps.
Real and fake images go through D as separate mini-batches (the DCGAN recipe: BatchNorm sees
all-real or all-fake batches), each with its own backward; DDP's gradient all-reduce happens
once, on the last backward of the step (`no_sync` on the others), which is also how
--grad_accum micro-batches accumulate: --batch_size images per rank and step, cut into
--grad_accum micro-batches. Each micro-batch loss is divided by their number, so the gradient
is the mean over the batch.

`Task` (also importable under its old name `GANTrainer`, and from gans.trainer) is the
family's trainkit.loop task: statistics stay on the device, and the loop does the logging,
checkpoint cadence and stopping.

Fakes in a conditional run use the labels of the real micro-batch they are paired with, so
the class mix D sees on both sides is the data's.

Stabilisers, each off by default (then the step is bit for bit the one without them):
- --diffaug POLICY: D sees every real and fake image through trainkit.diffaug (fresh random
  parameters per call), in its own step and in G's, where G's gradient flows through it;
- --r1_gamma γ (--lazy_reg k): R1 on the real micro-batches (trainkit.gan), every k-th step with
  the penalty multiplied by k (StyleGAN2's lazy regularisation), logged as `r1`; under fp16 its
  input gradient is taken with D's loss scale (else it can round to 0 and R1 vanish);
- --ema_kimg K (--ema_rampup r): a generator average with a half-life of K thousand images
  (trainkit.ema.HalfLifeEMA), the sampling weights by default; --ema_std: power-function averages
  with snapshots for post-hoc reconstruction (trainkit.phema).
"""

import copy
import math

import torch

from trainkit import checkpoint, data, diffaug, dist, ema, fileio, gan, loop, optim, phema, precision, run, sampling

from . import dcgan, models, sync_bn
from .sample import draw


class Task(loop.Task):
    # what the loop writes into options.json (evaluations read the losses and D's statistics
    # from there instead of guessing them from key names)
    loss_keys = ("loss_d", "loss_g")
    discriminator_keys = ("loss_d", "d_real", "d_fake", optim.D_ACCURACY, "r1", "grad_norm_d", "skipped_d")

    def __init__(self, G, D, *, loss="bce", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999,
                 precision_mode="fp32", ema_rates="", sync_batchnorm=False, device=None, grad_accum=1,
                 grid_inputs=None, batches=None, logger=None, diffaug_policy="", r1_gamma=0.0, lazy_reg=1,
                 ema_kimg=0.0, ema_rampup=0.05, ema_std="", ema_snapshot_interval=0, images_per_step=None,
                 compile=False):
        """`images_per_step`: the images of one step on all ranks, which the half-life and
        power-function averages count (default: the batches' batch size times the world size)."""
        device = dist.device() if device is None else torch.device(device)
        self.loss = gan.check_loss(loss)  # one-line error for a bad --loss before any work
        self.device = device
        # the FC models (gan, cgan) hold no BatchNorm: converting them leaves them as they are
        if sync_batchnorm and dist.world_size() > 1:
            sync_bn.convert(G, device)
            sync_bn.convert(D, device)
        self.G = G.to(device)
        self.D = D.to(device)
        # wrap_ddp broadcasts rank 0's weights, so every rank starts from the same networks
        # forward_buffer_sync=False: DDP would otherwise broadcast rank 0's BatchNorm running
        # statistics at every one of the five forwards of a GAN step, the main cost of a second
        # rank on small models. Training uses batch statistics, so it is unchanged; each rank
        # keeps its own running averages and rank 0's are the ones checkpointed and sampled
        # with (with --sync_bn every rank's are the same anyway).
        self.G_ddp = dist.wrap_ddp(self.G, forward_buffer_sync=False)
        self.D_ddp = dist.wrap_ddp(self.D, forward_buffer_sync=False)
        # --compile: the DDP-wrapped training forwards; self.G / self.D (saved, EMA'd) stay eager
        self.D_eager = self.D_ddp  # R1 steps: aot_autograd has no double backward (R1's grad of a grad)
        self.G_ddp = run.compiled(self.G_ddp, compile)
        self.D_ddp = run.compiled(self.D_ddp, compile)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=(beta1, beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=(beta1, beta2))
        # one loss scale per player: their gradients live on different scales
        self.prec_g = precision.Precision(precision_mode, device)
        self.prec_d = precision.Precision(precision_mode, device)
        self.ema_rates = ema.parse_rates(ema_rates)
        # built after wrap_ddp, so the shadow copies start from rank 0's weights on every rank
        self.ema = ema.EMA(self.G, self.ema_rates) if self.ema_rates else None
        if images_per_step is None and batches is not None:
            images_per_step = batches.batch_size * dist.world_size()
        if (ema_kimg or phema.parse_stds(ema_std)) and not images_per_step:
            raise ValueError("gans.task.Task: --ema_kimg / --ema_std need images_per_step (or batches)")
        self.halflife = ema.HalfLifeEMA(self.G, ema_kimg, ema_rampup, images_per_step) if ema_kimg else None
        self.power = phema.PowerEMA(self.G, ema_std, images_per_step) if phema.parse_stds(ema_std) else None
        self.snapshot_interval = int(ema_snapshot_interval or 0)
        self.averages = ema.Chain(self.ema, self.halflife, self.power) or None
        self.diffaug = diffaug.parse_policy(diffaug_policy)
        self.r1_gamma = float(r1_gamma or 0.0)
        self.lazy_reg = int(lazy_reg or 1)
        self.updates = 0  # steps done: the lazy R1 schedule
        self.grad_accum = int(grad_accum)
        self.grid_inputs = grid_inputs  # (z, y) of the grid PNG written with each checkpoint
        self.logger = logger  # the run's trainkit Logger: the grid also goes to TensorBoard when it is on
        self.batches = batches  # for the epoch in log rows

    def noise(self, n):
        return torch.randn(n, self.G.nz, 1, 1, device=self.device)

    def augment(self, x):
        """What D sees of an image batch: x itself, or x through --diffaug's transforms."""
        return diffaug.augment(self.diffaug, x) if self.diffaug else x

    def d_step(self, micro_batches) -> dict:
        """Update D on this rank's micro-batches [(x, y), ...]; returns local statistics."""
        self.D.train(), self.G.train()
        self.opt_d.zero_grad(set_to_none=True)
        k = len(micro_batches)
        with_r1 = self.r1_gamma > 0 and gan.r1_due(self.updates, self.lazy_reg)
        D = self.D_eager if with_r1 else self.D_ddp
        loss_sum = d_real = d_fake = acc = r1_sum = 0.0
        for i, (x, y) in enumerate(micro_batches):
            x = x.to(self.device)
            y = None if y is None else y.to(self.device)
            with torch.no_grad(), self.prec_d.autocast():
                fake = self.G(self.noise(len(x)), y)
            if with_r1:
                x = x.detach().requires_grad_(True)
            with dist.ddp_sync(self.D_ddp, False):
                with self.prec_d.autocast():
                    real_logits = D(self.augment(x), y).float()
                loss_real = gan.d_loss_real(real_logits, self.loss)
                if with_r1:
                    # lazy: every lazy_reg-th step, weighted by lazy_reg (StyleGAN2)
                    r1 = gan.r1_penalty(real_logits, x, self.r1_gamma, self.prec_d) * self.lazy_reg
                    r1_sum += r1.detach()
                    self.prec_d.backward((loss_real + r1) / k)
                else:
                    self.prec_d.backward(loss_real / k)
            with dist.ddp_sync(self.D_ddp, i == k - 1):
                with self.prec_d.autocast():
                    fake_logits = D(self.augment(fake.detach()), y).float()
                loss_fake = gan.d_loss_fake(fake_logits, self.loss)
                self.prec_d.backward(loss_fake / k)
            loss_sum += (loss_real + loss_fake).detach()
            d_real += torch.sigmoid(real_logits.detach()).mean()
            d_fake += torch.sigmoid(fake_logits.detach()).mean()
            acc += optim.d_accuracy(real_logits, fake_logits)  # all before the update below
        _, done = optim.finish_step(self.opt_d, self.prec_d, self.D, suffix="_d")
        stats = {"loss_d": loss_sum / k, "d_real": d_real / k, "d_fake": d_fake / k,
                 optim.D_ACCURACY: acc / k, **done}
        if with_r1:
            stats["r1"] = r1_sum / k
        return stats

    def g_step(self, labels) -> dict:
        """Update G once, on one fake micro-batch per entry of `labels` (a tensor, or None for
        the unconditional model, then one int batch size per entry); returns local statistics."""
        self.D.train(), self.G.train()
        self.opt_g.zero_grad(set_to_none=True)
        k = len(labels)
        loss_sum = d_fake = 0.0
        with gan.frozen(self.D) as D:  # the raw D: no DDP sync, no D gradients
            for i, (n, y) in enumerate(labels):
                y = None if y is None else y.to(self.device)
                with dist.ddp_sync(self.G_ddp, i == k - 1):
                    with self.prec_g.autocast():
                        logits = D(self.augment(self.G_ddp(self.noise(n), y)), y).float()
                    loss = gan.g_loss(logits, self.loss)
                    self.prec_g.backward(loss / k)
                loss_sum += loss.detach()
                d_fake += torch.sigmoid(logits.detach()).mean()
        _, done = optim.finish_step(self.opt_g, self.prec_g, self.G, ema=self.averages)
        return {"loss_g": loss_sum / k, "d_fake_g": d_fake / k, **done}

    def update(self, micro_batches) -> dict:
        """One D update then one G update on this rank's micro-batches [(x, y), ...]."""
        stats = self.d_step(micro_batches)
        stats.update(self.g_step([(len(x), y) for x, y in micro_batches]))
        return stats

    # --- what trainkit.loop calls ----------------------------------------------------------

    def step(self, batch, step, epoch) -> dict:
        x, y = batch
        if y is not None and self.G.num_classes:  # on the host, before the copy: no device read
            dcgan.check_labels(y, self.G.num_classes, len(y))
        self.updates = step
        k = self.grad_accum
        return self.update(list(zip(x.chunk(k), y.chunk(k) if y is not None else [None] * k)))

    def modules(self) -> dict:
        return {"generator": self.G, "discriminator": self.D}

    def sample_weights(self, step) -> str:
        """trainkit.ema's rule: the half-life average, else the highest settled rate, else the
        first power-function profile, else the raw generator."""
        return ema.choose_sample_weights(step, fixed=self.ema, halflife=self.halflife, power=self.power)

    def after_step(self, run_dir, step) -> None:
        phema.snapshot_due(self.power, self.snapshot_interval, run_dir, step, self.G)

    def log_extras(self) -> dict:
        extras = {"epoch": self.batches.epoch} if self.batches is not None else {}
        extras.update(precision.log_values(self.scalers()))  # loss_scale_g / loss_scale_d under fp16
        return extras

    def artefacts(self, run_dir, step) -> None:
        phema.snapshot_due(self.power, self.snapshot_interval, run_dir, step, self.G, checkpoint=True)
        if self.grid_inputs is not None and dist.is_main():
            with dist.rank_zero_only("gans: sample grid"):
                grid = write_grid(self.G, *self.grid_inputs, f"{run_dir}/grid{step:06d}.png")
                if self.logger is not None:
                    self.logger.log_image("samples", grid, step)

    def probe_images(self, weights, n, seed):
        """n images of a copy of G holding `weights`, in eval mode like gans.sample, drawn by
        gans.sample's own `draw` for indices 0..n-1 with --seed `seed` (the same noise and
        random labels)."""
        G = copy.deepcopy(self.G)
        G.load_state_dict(weights)
        G.eval()
        return draw(G, sampling.PerSampleRandom(seed, range(n), self.device))

    def trainer_state(self) -> dict:
        return {"precision": self.precision_state(), "model_kind": models.kind_of(self.G),
                "num_classes": self.G.num_classes, **ema.averages_state(self.ema, self.halflife, self.power)}

    # --- checkpoints -----------------------------------------------------------------------

    def state_dicts(self) -> dict:
        """Checkpoint files of one step, by prefix: model (G, so model*.pt samples like openai's),
        ema_{rate}_ (G's averages), opt (G's Adam), disc (D), disc_opt (D's Adam)."""
        return {"model": self.G.state_dict(), "disc": self.D.state_dict(),
                "opt": self.opt_g.state_dict(), "disc_opt": self.opt_d.state_dict(),
                **ema.save_states(self.G, self.ema, self.halflife, self.power)}

    def scalers(self) -> dict:
        """The loss scales by optimizer name (trainkit.precision's layout and log keys)."""
        return {"g": self.prec_g, "d": self.prec_d}

    def precision_state(self) -> dict:
        return precision.state_dict(self.scalers())

    def load_state_dicts(self, ck) -> None:
        """Restore networks, optimizers, EMAs and loss scales from a trainkit Checkpoint."""
        models.load_generator_state(self.G, ck.load("model"), ck.path("model"))
        models.load_discriminator_state(self.D, ck.load("disc"), ck.path("disc"))
        checkpoint.load_optimizer(self.opt_g, ck.load("opt"), ck.path("opt"))
        checkpoint.load_optimizer(self.opt_d, ck.load("disc_opt"), ck.path("disc_opt"))
        # after G's weights: an average whose file the step lacks restarts from them (logged)
        ema.load_states(ck, self.G, self.ema, self.halflife, self.power,
                        log=self.logger.log if self.logger is not None else None)
        precision.load_state_dict(self.scalers(), ck.state)


# gans.trainer's name for the Task, kept for the scripts and tests that import it
GANTrainer = Task


def fixed_inputs(args, num_classes, device):
    """The grid's noise: per-sample seeds from --seed, so every run and resume shows the same z."""
    z = sampling.PerSampleRandom(args.seed, range(args.grid_size), device).randn(args.nz, 1, 1)
    y = torch.arange(args.grid_size, device=device) % num_classes if num_classes else None
    return z, y


def build_task(args, dataset, logger=None):
    """The Task gans.train trains, from its parsed flags (gans.train.create_argparser) and the
    loaded `dataset` (its number of classes, its batches): benchmarks/gpu_check.py and
    benchmarks/train_throughput.py build theirs here too, so they time what training runs."""
    G, D = models.create_models(args.model, args.image_size, args.nz, args.ngf, args.ndf,
                                args.num_channels, dataset.num_classes, args.minibatch_std)
    batches = data.Batches(dataset, args.batch_size, seed=args.seed, random_flip=args.random_flip)
    return Task(G, D, loss=args.loss, lr_g=args.lr_g, lr_d=args.lr_d, beta1=args.beta1,
                beta2=args.beta2, precision_mode=args.precision, ema_rates=args.ema_rate,
                sync_batchnorm=args.sync_bn, grad_accum=args.grad_accum, batches=batches,
                grid_inputs=fixed_inputs(args, G.num_classes, dist.device()), logger=logger,
                diffaug_policy=args.diffaug, r1_gamma=args.r1_gamma, lazy_reg=args.lazy_reg,
                ema_kimg=args.ema_kimg, ema_rampup=args.ema_rampup, ema_std=args.ema_std,
                ema_snapshot_interval=args.ema_snapshot_interval, compile=args.compile)


@torch.no_grad()
def write_grid(G, z, y, path):
    """G's images of the fixed grid inputs, as one PNG written atomically; returns the grid
    (uint8 HWC, what the PNG holds)."""
    # imported here: torchvision costs ~2.5 s at start-up and only rank 0 writes grids
    from PIL import Image
    from torchvision.utils import make_grid

    was_training = G.training
    G.eval()  # running statistics: the image does not depend on which z share the batch
    images = G(z, y).float()
    G.train(was_training)
    grid = make_grid(images, nrow=int(math.ceil(math.sqrt(len(images)))), normalize=True, value_range=(-1, 1))
    # the rounding of torchvision's save_image, so the PNG is the one it wrote
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    with fileio.atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="png")
    return pixels
