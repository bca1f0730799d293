"""Train a DCGAN or class-conditional DCGAN: `python -m gans.train --data_dir DIR ...`.

Runs the same as a plain process, under `mpiexec -n N` or `torchrun --nproc_per_node N`.
--batch_size is per rank and per micro-batch, as in improved_diffusion; one optimizer step of
each player sees batch_size x grad_accum x world_size images.

Every --save_interval steps (and at the end, and on SIGTERM/SIGINT) the run directory gets the
checkpoint files of the step (model/disc/opt/disc_opt/ema_*/state%06d.pt) and grid%06d.png, a
sample grid of G on fixed noise (fixed labels i mod classes for cdcgan).
"""

import math

import torch

from trainkit import checkpoint, data, dist, fileio, run, sampling
from trainkit.errors import UserError

from . import dcgan
from .trainer import GANTrainer


def create_argparser():
    p = run.ArgumentParser(description="Train DCGAN (--model dcgan) or class-conditional DCGAN (cdcgan).")
    p.add_argument("--model", default="dcgan", choices=dcgan.MODEL_KINDS)
    p.add_argument("--data_dir", default="", help="image folder (labels: file name before the first '_') or samples .npz")
    p.add_argument("--image_size", type=int, default=64, help="a power of two >= 8; 28 px data: use 32")
    p.add_argument("--num_channels", type=int, default=3, help="image channels: 1 (grey) or 3 (RGB)")
    p.add_argument("--batch_size", type=int, default=128, help="per rank, per micro-batch")
    p.add_argument("--epochs", type=int, default=50, help="passes over the data (ignored when --max_steps > 0)")
    p.add_argument("--max_steps", type=int, default=0, help="optimizer steps to train (0: use --epochs)")
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--lr_g", type=float, default=2e-4)
    p.add_argument("--lr_d", type=float, default=2e-4)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--loss", default="bce", choices=("bce", "hinge"))
    p.add_argument("--resume_checkpoint", default="", help="a run directory (its latest step), any file of a step, or auto "
                   "(the newest checkpoint of --logdir, or a fresh start when it has none)")
    p.add_argument("--save_interval", type=int, default=1000, help="steps between checkpoints and grids")
    p.add_argument("--log_interval", type=int, default=10, help="steps averaged into one log row")
    p.add_argument("--ema_rate", default="", help="comma list of EMA rates of G, e.g. 0.999 ('' = none)")
    p.add_argument("--grad_accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--sync_bn", type=run.str2bool, default=False, help="BatchNorm statistics over all ranks")
    p.add_argument("--random_flip", type=run.str2bool, default=False)
    p.add_argument("--grid_size", type=int, default=64, help="images in each fixed-noise grid PNG")
    run.add_run_args(p)
    return p


def check_args(args):
    """Flag errors that need no data, raised before the run directory exists."""
    dcgan.num_stages(args.image_size)
    for name in ("batch_size", "nz", "ngf", "ndf", "save_interval", "log_interval", "grad_accum", "grid_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.max_steps < 0 or (args.max_steps == 0 and args.epochs < 1):
        raise UserError(f"--epochs {args.epochs} / --max_steps {args.max_steps}: nothing to train")
    for name in ("lr_g", "lr_d"):
        if not getattr(args, name) > 0:
            raise UserError(f"--{name} {getattr(args, name)}: must be positive")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must lie in [0, 1)")
    if args.num_channels not in (1, 3):
        raise UserError(f"--num_channels {args.num_channels}: must be 1 or 3")
    if args.resume_checkpoint not in ("", "auto"):
        # a checkpoint of the other model kind (or not a GAN at all) fails here, before any
        # run directory or data work
        check_kind(checkpoint.resolve(args.resume_checkpoint), args.model)


def check_kind(ck, model):
    kind = dcgan.generator_config(ck.load("model"), ck.path("model"))["model"]
    if kind != model:
        raise UserError(f"{ck.path('model')}: checkpoint holds a {kind} generator, but --model is {model}")


def fixed_inputs(args, num_classes, device):
    """The grid's noise: per-sample seeds from --seed, so every run and resume shows the same z."""
    z = sampling.PerSampleRandom(args.seed, range(args.grid_size), device).randn(args.nz, 1, 1)
    y = torch.arange(args.grid_size, device=device) % num_classes if num_classes else None
    return z, y


@torch.no_grad()
def write_grid(G, z, y, path):
    # imported here: torchvision costs ~2.5 s at start-up and only rank 0 writes grids
    from torchvision.utils import save_image

    was_training = G.training
    G.eval()  # running statistics: the image does not depend on which z share the batch
    images = G(z, y).float()
    G.train(was_training)
    with fileio.atomic_path(path) as tmp:
        save_image(images, tmp, nrow=int(math.ceil(math.sqrt(len(images)))), normalize=True,
                   value_range=(-1, 1), format="png")


@run.main
def main():
    args = create_argparser().parse_args()
    check_args(args)
    r = run.setup("gans", args, resume=args.resume_checkpoint)
    log = r.logger
    d = data.load_dataset(args.data_dir, args.image_size, class_cond=args.model == "cdcgan",
                          channels=args.num_channels)
    G, D = dcgan.create_models(args.model, args.image_size, args.nz, args.ngf, args.ndf,
                               args.num_channels, d.num_classes)
    trainer = GANTrainer(G, D, loss=args.loss, lr_g=args.lr_g, lr_d=args.lr_d, beta1=args.beta1,
                         beta2=args.beta2, precision_mode=args.precision, ema_rates=args.ema_rate,
                         sync_batchnorm=args.sync_bn)
    batches = data.Batches(d, args.batch_size, seed=args.seed, random_flip=args.random_flip)
    steps_per_epoch = batches.batches_per_epoch // args.grad_accum
    if steps_per_epoch < 1:
        raise UserError(f"{args.data_dir}: {len(d)} images make fewer than --grad_accum {args.grad_accum} batches")
    total_steps = args.max_steps or args.epochs * steps_per_epoch

    step = 0
    ck = r.resume
    if ck is not None:
        check_kind(ck, args.model)
        if ck.state is None or "data" not in ck.state:
            raise UserError(f"{ck.dir}: step {ck.step} has no gans trainer state (state{ck.step:06d}.pt)")
        trainer.load(ck)
        batches.load_state_dict(ck.state["data"])
        run.set_rng_state(ck.state["rng"])
        step = ck.step
        log.log(f"resumed from {ck.dir} at step {step}")
        if step >= total_steps:
            log.log(f"step {step} is already at or past the last step {total_steps}: nothing to train")

    n_params = lambda m: sum(p.numel() for p in m.parameters())
    log.log(f"{args.model}: G {n_params(G):,} / D {n_params(D):,} parameters, {len(d)} images, "
            f"{d.num_classes} classes, {steps_per_epoch} steps per epoch, training to step {total_steps}")
    fixed_z, fixed_y = fixed_inputs(args, G.num_classes, trainer.device)
    images_per_step = args.batch_size * args.grad_accum * dist.world_size()

    def save(step):
        if dist.is_main():
            write_grid(G, fixed_z, fixed_y, f"{r.dir}/grid{step:06d}.png")
        state = {"rng": run.rng_state(), "data": batches.state_dict(), "precision": trainer.precision_state(),
                 "model_kind": args.model, "num_classes": G.num_classes}
        checkpoint.save(r.dir, step, trainer.state_dicts(), state)

    while step < total_steps:
        stats = trainer.step([next(batches) for _ in range(args.grad_accum)])
        step += 1
        for k, v in stats.items():
            log.logkv_mean(k, v)
        if step % args.log_interval == 0 or step == total_steps:
            log.logkv("step", step)
            log.logkv("epoch", batches.epoch)
            log.logkv("samples", step * images_per_step)
            if args.precision == "fp16":
                log.logkv("loss_scale_d", trainer.prec_d.scale)
                log.logkv("loss_scale_g", trainer.prec_g.scale)
            log.dumpkvs()
        stop = run.should_stop()
        if step % args.save_interval == 0 or step == total_steps or stop:
            save(step)
        if stop:
            log.log(run.stopped_message(step, r.dir))
            break
    dist.barrier()


if __name__ == "__main__":
    main()
