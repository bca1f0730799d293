"""Train a GAN of any kind of gans.models: `python -m gans.train --model KIND --data_dir DIR ...`.

Kinds: dcgan / cdcgan (convolutional, dcgan.py; powers of two >= 8 px) and gan / cgan (fully
connected, fcgan.py; any size, e.g. MNIST at its native 28 px). cdcgan and cgan are
class-conditional.

Runs the same as a plain process, under `mpiexec -n N` or `torchrun --nproc_per_node N`.
--batch_size is per rank and per optimizer step, as in every family; --grad_accum K cuts it into
K micro-batches (it must divide it), so one step of each player sees batch_size x world_size
images whatever K is. The loop is trainkit.loop.

Every --save_interval steps (and at the end, and on SIGTERM/SIGINT) the run directory gets the
checkpoint files of the step (model/disc/opt/disc_opt/ema_*/state%06d.pt) and grid%06d.png, a
sample grid of G on fixed noise (fixed labels i mod classes for the conditional kinds).
"""

from evaluations import probe
from trainkit import checkpoint, data, diffaug, ema, loop, loopflags, phema, run
from trainkit.errors import UserError

from . import models
from .task import build_task


def create_argparser():
    p = run.ArgumentParser(description="Train DCGAN (--model dcgan), class-conditional DCGAN (cdcgan), "
                                       "the fully connected GAN (gan) or its conditional variant (cgan).")
    p.add_argument("--model", default="dcgan", choices=models.MODEL_KINDS,
                   help="dcgan/cdcgan: convolutional (Radford et al.); gan/cgan: fully connected (Goodfellow et "
                        "al., Mirza & Osindero); cdcgan and cgan are class-conditional")
    p.add_argument("--data_dir", default="",
                   help="training data (required): an image folder (labels: file name before the first '_') or "
                        "a samples .npz")
    p.add_argument("--image_size", type=run.POSITIVE_INT, default=64,
                   help="pixels per side; dcgan/cdcgan need a power of two >= 8, gan/cgan take any size")
    p.add_argument("--num_channels", type=run.int_range(1, 3), default=3, help="image channels: 1 (grey) or 3 (RGB)")
    p.add_argument("--batch_size", type=run.POSITIVE_INT, default=128, help="images per rank per optimizer step")
    p.add_argument("--epochs", type=run.NONNEG_INT, default=50,
                   help="passes over the data (ignored when --max_steps > 0)")
    p.add_argument("--nz", type=run.POSITIVE_INT, default=100, help="size of G's latent z")
    p.add_argument("--ngf", type=run.POSITIVE_INT, default=64,
                   help="G's width: channels of its last hidden block, doubling per stage down to 4x4 (dcgan); "
                        "hidden layers of 4, 8 and 16 x ngf units (gan)")
    p.add_argument("--ndf", type=run.POSITIVE_INT, default=64, help="D's width, as --ngf for G")
    p.add_argument("--lr_g", type=run.POSITIVE_FLOAT, default=2e-4, help="Adam learning rate of G")
    p.add_argument("--lr_d", type=run.POSITIVE_FLOAT, default=2e-4, help="Adam learning rate of D")
    p.add_argument("--beta1", type=run.float_range(0, 1, hi_open=True), default=0.5,
                   help="Adam beta1 of both players, in [0, 1) (0.5: the DCGAN paper's)")
    p.add_argument("--beta2", type=run.float_range(0, 1, hi_open=True), default=0.999,
                   help="Adam beta2 of both players, in [0, 1)")
    p.add_argument("--loss", default="bce", choices=("bce", "hinge"),
                   help="bce: the GAN paper's loss, non-saturating for G; hinge: max(0, 1 -/+ D) for D and -D(G(z)) "
                        "for G")
    p.add_argument("--minibatch_std", type=run.str2bool, default=False,
                   help="D's last layer also sees the batch's feature std (one extra channel or input), a diversity "
                        "signal; off is the DCGAN paper's D")
    # not range-typed: tests pin the one-line message of check_args ("--grad_accum 0: must be at least 1")
    p.add_argument("--grad_accum", type=int, default=1,
                   help="micro-batches the batch is cut into (>= 1, must divide --batch_size)")
    p.add_argument("--sync_bn", type=run.str2bool, default=False,
                   help="BatchNorm statistics over all ranks (gan/cgan have no BatchNorm: no effect)")
    p.add_argument("--random_flip", type=run.str2bool, default=False,
                   help="flip each training image horizontally with probability 1/2")
    p.add_argument("--grid_size", type=run.POSITIVE_INT, default=64, help="images in each fixed-noise grid PNG")
    # stabilisers (docs/gans.md): each off by default
    diffaug.add_args(p)
    p.add_argument("--r1_gamma", type=run.NONNEG_FLOAT, default=0.0,
                   help="R1 penalty weight gamma on real images, gamma/2 E|grad_x D(x)|^2 (Mescheder et al. 2018; "
                        "0: off)")
    p.add_argument("--lazy_reg", type=run.POSITIVE_INT, default=1,
                   help="with --r1_gamma: apply R1 every N steps, multiplied by N (StyleGAN2's lazy "
                        "regularisation; 1: every step)")
    ema.add_halflife_args(p)
    phema.add_args(p)
    # the loop's flags, one declaration for every family (--max_steps, --save_interval, --log_interval,
    # --precision, --resume_checkpoint, --ema_rate, --probe_*)
    loopflags.add_args(p)
    p.set_defaults(save_interval=1000)  # gans' cadence of checkpoints and sample grids
    run.add_run_args(p)
    return p


def check_args(args):
    """Flag errors that need no data, raised before the run directory exists."""
    models.check_image_size(args.model, args.image_size)
    if args.grad_accum < 1:
        raise UserError(f"--grad_accum {args.grad_accum}: must be at least 1")
    if args.max_steps == 0 and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} / --max_steps {args.max_steps}: nothing to train")
    if args.batch_size % args.grad_accum:
        raise UserError(f"--grad_accum {args.grad_accum} does not divide --batch_size {args.batch_size} "
                        "into equal micro-batches")
    if args.ema_kimg < 0:
        raise UserError(f"--ema_kimg {args.ema_kimg}: must be 0 (off) or a positive number of thousands of images")
    if args.ema_rampup < 0:
        raise UserError(f"--ema_rampup {args.ema_rampup}: must be 0 (no ramp-up) or positive")
    phema.check_args(args.ema_std, args.ema_snapshot_interval)
    if args.num_channels not in (1, 3):  # the parser takes 1..3
        raise UserError(f"--num_channels {args.num_channels}: must be 1 or 3")
    if args.resume_checkpoint not in ("", "auto"):
        # a checkpoint of the other model kind (or not a GAN at all) fails here, before any
        # run directory or data work
        check_kind(checkpoint.resolve(args.resume_checkpoint), args.model)


def check_kind(ck, model):
    kind = models.generator_config(ck.load("model"), ck.path("model"))["model"]
    if kind != model:
        raise UserError(f"{ck.path('model')}: checkpoint holds a {kind} generator, but --model is {model}")


@run.main
def main():
    args = create_argparser().parse_args()
    check_args(args)
    r = run.setup("gans", args, resume=args.resume_checkpoint)
    if r.resume is not None:
        check_kind(r.resume, args.model)  # `auto` found it only now
    d = data.load_dataset(args.data_dir, args.image_size, class_cond=args.model in models.CONDITIONAL,
                          channels=args.num_channels)
    task = build_task(args, d, logger=r.logger)
    G, D, batches = task.G, task.D, task.batches
    total = loop.total_steps(args.max_steps or args.epochs * batches.batches_per_epoch)
    def n_params(m):
        return sum(p.numel() for p in m.parameters())
    r.logger.log(f"{args.model}: G {n_params(G):,} / D {n_params(D):,} parameters, {len(d)} images, "
                 f"{d.num_classes} classes, {batches.batches_per_epoch} steps per epoch, training to step {total}")
    loop.Loop(r, task, batches, total_steps=total, log_interval=args.log_interval,
              save_interval=args.save_interval, precision=args.precision, seed=args.seed,
              probe=probe.from_args(args, args.image_size)).run_loop()


if __name__ == "__main__":
    main()
