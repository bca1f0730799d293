"""Train a Denoising Diffusion GAN: `python -m ddgan.train --data_dir DIR --ch_mult 1 2 2 2 ...`.

Flags are train_ddgan.py's (same names and defaults) plus --data_dir, --grad_accum, --logdir,
--precision, --resume_checkpoint (alias --resume), --max_steps, --log_interval, --save_interval,
--ema_rate R (the same as --use_ema --ema_decay R), --probe_* (the loop's flags, declared by
trainkit.loopflags), --dist_timeout, --d_steps.
--batch_size is, as in the reference and in every family here, the number of images each process
uses for one optimizer step; --grad_accum K cuts it into K micro-batches whose gradients are
averaged. D's minibatch-std layer sees one micro-batch at a time, so K changes the update a
little as well as the memory. The loop is trainkit.loop.

The reference's command lines run unchanged: --num_process_per_node N (and --num_proc_node,
--node_rank, --master_address) starts N ranks through torch's elastic launcher
(trainkit.elastic), and --exp NAME without --logdir (or $OPENAI_LOGDIR) trains in ./saved_info/dd_gan/{dataset}/{exp}/
with the reference's netG_{epoch}.pth, content.pth and PNGs beside our checkpoints
(ddgan.experiment); --exp NAME --resume continues it.

Data as the reference finds it: --dataset cifar10 without --data_dir reads ./data in torchvision's
layout (cifar-10-batches-py/ or cifar-10-python.tar.gz; trainkit.cifar_layout), and --dataset lsun
trains on the first LSUN_SUBSET images, train_ddgan.py's Subset(range(0, 120000)).

The Task (D and G updates, lazy R1, EMA, cosine lr) and build_task are ddgan/task.py.
"""

import os

from evaluations import probe
from trainkit import cifar_layout, data, diffaug, dist, elastic, ema, loop, loopflags, phema, run
from trainkit.errors import UserError

from . import experiment, script_util
from .task import build_task, resolve_ema_flags

FAMILY = "ddgan"
REFERENCE_DATA_DIR = "./data"  # train_ddgan.py: CIFAR10('./data', train=True, download=True)
# train_ddgan.py: Subset(LSUN(classes=['church_outdoor_train']), list(range(0, 120000)))
LSUN_SUBSET = 120000


def create_parser():
    p = run.ArgumentParser(description=__doc__)
    script_util.add_model_args(p)
    a = p.add_argument
    a("--data_dir", default="",
      help="training data: an image folder, a samples .npz, an LMDB, or torchvision's CIFAR-10 folder "
           "(holding cifar-10-batches-py or cifar-10-python.tar.gz); default with --dataset cifar10: "
           f"{REFERENCE_DATA_DIR}, as the reference; required otherwise")
    a("--exp", default=None,
      help="experiment name: without --logdir (or $OPENAI_LOGDIR) the run lives in "
           "./saved_info/dd_gan/{dataset}/{exp}/ with the reference's netG_{epoch}.pth, content.pth and "
           "per-epoch PNGs (reference default "
           "experiment_cifar_default; left out: runs/ddgan-<time>)")
    a("--batch_size", type=run.POSITIVE_INT, default=128, help="images per process per optimizer step")
    a("--grad_accum", type=run.POSITIVE_INT, default=1,
      help="micro-batches per step (must divide batch_size), their gradients averaged; D's minibatch-std "
           "then sees one micro-batch at a time")
    a("--num_epoch", type=run.POSITIVE_INT, default=1200,
      help="epochs 0..num_epoch are trained, as the reference; also the cosine lr period")
    a("--lr_g", type=run.POSITIVE_FLOAT, default=1.5e-4, help="generator Adam learning rate")
    a("--lr_d", type=run.POSITIVE_FLOAT, default=1e-4, help="discriminator Adam learning rate")
    a("--beta1", type=run.float_range(0, 1, hi_open=True), default=0.5, help="Adam beta1 (both networks)")
    a("--beta2", type=run.float_range(0, 1, hi_open=True), default=0.9, help="Adam beta2 (both networks)")
    a("--no_lr_decay", action="store_true", default=False,
      help="keep the learning rates constant (default: cosine to 1e-5 over num_epoch epochs)")
    a("--use_ema", action="store_true", default=False,
      help="keep an EMA of the generator (used for sampling); --ema_rate R is the same as --use_ema --ema_decay R")
    a("--ema_decay", type=run.float_range(0, 1, hi_open=True), default=0.9999, help="EMA decay per step")
    a("--d_steps", type=run.POSITIVE_INT, default=1,
      help="discriminator updates per generator update, each with fresh t and noise on the step's "
           "images (not in the reference, which does 1). With 1, D sits at chance on the digits "
           "while the generator wanders (docs/evaluations.md)")
    a("--r1_gamma", type=run.NONNEG_FLOAT, default=0.05, help="R1 penalty weight on real pairs (0: off)")
    a("--lazy_reg", type=run.POSITIVE_INT, default=None,
      help="apply R1 every N steps (default: every step)")
    # stabilisers shared with gans (docs/ddgan.md), off by default
    diffaug.add_args(p)
    ema.add_halflife_args(p)
    phema.add_args(p)
    a("--save_content", action="store_true", default=False,
      help="also write content.pth every --save_content_every epochs (with --exp) and checkpoint then")
    a("--save_content_every", type=run.POSITIVE_INT, default=50, help="epochs between content.pth writes")
    a("--save_ckpt_every", type=run.POSITIVE_INT, default=25,
      help="checkpoint (and, with --exp, netG_{epoch}.pth) every N epochs")
    a("--random_flip", type=run.str2bool, default=True,
      help="horizontal flips, as the reference's data transforms (false for digits)")
    elastic.add_args(p)
    # the loop's flags, declared once by trainkit (--max_steps, --save_interval, --log_interval,
    # --precision, --resume_checkpoint, --ema_rate, --probe_*), with the reference's bare --resume
    loopflags.add_args(p, aliases={"resume_checkpoint": ("--resume",)})
    run.add_run_args(p)
    # the reference's seed; its log cadence; checkpoints by epochs (--save_ckpt_every) unless asked
    p.set_defaults(seed=1024, log_interval=100, save_interval=0)
    return p


def check_options(o):
    script_util.check_model_options(o)
    if o["batch_size"] < 1:
        raise UserError(f"--batch_size: {o['batch_size']} must be positive")
    k = o["grad_accum"]
    if k < 1 or o["batch_size"] % k:
        raise UserError(f"--grad_accum {k} does not divide --batch_size {o['batch_size']} "
                        "into equal micro-batches")
    micro = o["batch_size"] // k
    if micro > 4 and micro % 4:
        raise UserError(f"--batch_size {o['batch_size']} / --grad_accum {k} = {micro} images per "
                        "micro-batch: the discriminator's minibatch-std needs a multiple of 4")
    if o["lazy_reg"] is not None and o["lazy_reg"] <= 0:
        raise UserError(f"--lazy_reg {o['lazy_reg']}: must be a positive number of steps "
                        "(leave it out to apply R1 every step)")
    if o["num_epoch"] < 1:
        raise UserError(f"--num_epoch {o['num_epoch']} must be at least 1")
    for flag in ("save_ckpt_every", "save_content_every", "log_interval"):
        if o[flag] < 1:
            raise UserError(f"--{flag} {o[flag]} must be at least 1")
    for flag in ("save_interval", "max_steps"):
        if o[flag] < 0:
            raise UserError(f"--{flag} {o[flag]} must be 0 (off) or positive")
    if o["ema_kimg"] < 0:
        raise UserError(f"--ema_kimg {o['ema_kimg']}: must be 0 (off) or a positive number of thousands of images")
    if o["ema_rampup"] < 0:
        raise UserError(f"--ema_rampup {o['ema_rampup']}: must be 0 (no ramp-up) or positive")
    phema.check_args(o["ema_std"], o["ema_snapshot_interval"])
    if not 0.0 <= o["ema_decay"] < 1.0:
        raise UserError(f"--ema_decay {o['ema_decay']} is outside [0, 1)")
    resolve_ema_flags(o)  # --ema_rate R is --use_ema --ema_decay R


def prepare(o):
    """The checks that need no process group, and the --exp folder (or None): run by a plain
    process before it spawns ranks, so a bad flag is one line from one process, and by each rank."""
    check_options(o)
    elastic.check_agreement(o)
    if not o["data_dir"] and o["dataset"] == "cifar10":
        cifar_layout.require(REFERENCE_DATA_DIR)  # no download here: one line says what to fetch
        o["data_dir"] = REFERENCE_DATA_DIR
    if o["exp"] is None or o["logdir"] or os.environ.get("OPENAI_LOGDIR"):
        return None
    exp_dir = experiment.folder(o["dataset"], o["exp"])
    experiment.check_folder(exp_dir)  # every rank sees the same files and refuses alike
    return exp_dir


def epoch_save_due(o, epoch):
    """Whether the end of `epoch` (0-based, as the reference counts) writes a checkpoint: every
    --save_ckpt_every epochs, and every --save_content_every with --save_content."""
    return epoch % o["save_ckpt_every"] == 0 or (o["save_content"] and epoch % o["save_content_every"] == 0)


def train(args):
    o = vars(args)
    exp_dir = prepare(o)
    r = run.setup(FAMILY, args, logdir=exp_dir, resume=o["resume_checkpoint"])
    dataset = data.load_dataset(o["data_dir"], o["image_size"], channels=o["num_channels"])
    dataset, selection = reference_subset(dataset, o["dataset"])
    if selection:
        r.logger.log(selection)
    batches = data.Batches(dataset, o["batch_size"], seed=o["seed"], random_flip=o["random_flip"])
    trainer = build_task(args, log=r.logger.log)
    generator, discriminator = trainer.g_raw, trainer.d_raw
    if exp_dir is not None:
        trainer.files = experiment.ExperimentFiles(o, r.logger)
    n_g = sum(p.numel() for p in generator.parameters())
    n_d = sum(p.numel() for p in discriminator.parameters())
    r.logger.log(f"generator {n_g:,} parameters, {type(discriminator).__name__} {n_d:,}; "
                 f"{len(dataset)} images, {batches.batches_per_epoch} steps per epoch, "
                 f"{o['batch_size']} x {dist.world_size()} images per step in "
                 f"{o['grad_accum']} micro-batch(es)")

    def epoch_save(epoch):
        return epoch_save_due(o, epoch)

    # the reference runs epochs 0..num_epoch inclusive
    total = loop.total_steps((o["num_epoch"] + 1) * batches.batches_per_epoch, o["max_steps"])
    loop.Loop(r, trainer, batches, total_steps=total, log_interval=o["log_interval"],
              save_interval=o["save_interval"], epoch_save=epoch_save, precision=o["precision"],
              seed=o["seed"], probe=probe.from_args(args, o["image_size"])).run_loop()
    return r.dir


def reference_subset(dataset, name, size=None):
    """(images, log line or None): for --dataset lsun, train_ddgan.py's selection, the first `size`
    images in the loader's order (an LMDB's key order, which is torchvision's LSUN order, or a
    folder's sorted paths); all of them when there are fewer. Other data sets unchanged."""
    if name != "lsun":
        return dataset, None
    size = LSUN_SUBSET if size is None else size
    n = len(dataset)
    if n <= size:
        return dataset, f"--dataset lsun: all {n} images of {dataset.source} (the reference takes the first {size})"
    labels = dataset.labels[:size] if dataset.labels is not None else None
    subset = data.ImageData(dataset.images[:size], labels, dataset.source, dataset.classes)
    return subset, f"--dataset lsun: the first {size} of {n} images of {dataset.source}, as the reference"


@run.main
def main():
    args = create_parser().parse_args()
    if elastic.wants_spawn(vars(args)):
        prepare(vars(args))  # a bad flag fails here, before any rank starts
        code = elastic.spawn(vars(args), "ddgan.train")
        if code:
            raise SystemExit(code)
        return
    train(args)


if __name__ == "__main__":
    main()
