"""Train a diffusion model on images: `python -m improved_diffusion.train [openai's flags]`.

Accepts every flag of openai's scripts/image_train.py with the same defaults, plus
--max_steps, --precision fp32|fp16|bf16, --seed, --logdir, --channel_mult, --num_classes.
--ema_rate takes a comma list; --resume_checkpoint a checkpoint file, a run directory (ours or
openai's), or `auto` (the newest checkpoint of --logdir, or a fresh start when it has none).
--batch_size is per rank and per optimizer step; --microbatch N cuts it into pieces of N images
whose gradients are averaged. The loop is trainkit.loop, the Task and build_task task.py
(build_task and create_model_and_diffusion_checked stay importable from here).
"""

from evaluations import probe
from trainkit import data, loop, loopflags, phema, precision, run
from trainkit.errors import UserError

from .cli import build_parser, create_model_and_diffusion_checked
from .script_util import one_of
from .task import build_task


def create_argparser():
    defaults = dict(
        data_dir="",
        schedule_sampler="uniform",
        lr=1e-4,
        weight_decay=0.0,
        lr_anneal_steps=0,
        batch_size=1,
        microbatch=-1,  # -1 disables microbatches
        ema_rate="0.9999",  # comma-separated list of EMA rates
        log_interval=10,
        save_interval=10000,
        resume_checkpoint="",
        use_fp16=False,
        fp16_scale_growth=1e-3,
        # extensions
        max_steps=0,  # 0: no limit besides lr_anneal_steps (openai trains forever)
        precision="",  # fp32 | fp16 | bf16; empty: fp16 with --use_fp16 True, else fp32
    )
    parser = build_parser("Train an improved-diffusion model (openai/improved-diffusion flags).", defaults,
                          helps=TRAIN_HELP, types=TRAIN_TYPES)
    # the loop's own flags come from trainkit.loopflags: openai's above (its defaults), the probe's here
    return phema.add_args(loopflags.add_args(parser, skip=tuple(loopflags.LOOP_FLAGS)))


TRAIN_HELP = dict(
    data_dir="training data (required): an image folder (class labels from the file names' text before the first "
             "'_') or a samples .npz (labels from arr_1)",
    schedule_sampler="how each image's timestep is drawn: uniform, or loss-second-moment (importance sampling by "
                     "the recent loss of each timestep)",
    lr="AdamW learning rate (> 0)",
    weight_decay="AdamW weight decay (>= 0)",
    lr_anneal_steps="lower the lr linearly to 0 over this many steps and stop there; 0: constant lr and no end "
                    "(as openai; see --max_steps)",
    batch_size="images per rank per optimizer step (as openai)",
    microbatch="cut each batch into pieces of N images; their gradients are averaged (openai sums them); -1 or 0: "
               "no pieces",
    ema_rate="comma list of EMA rates in [0, 1); one ema_RATE_STEP.pt file per rate",
    log_interval="steps averaged into one log row",
    save_interval="steps between checkpoints (one is also written at the end and on a stop signal); 0: none between",
    resume_checkpoint="continue from a checkpoint file, a run directory (ours or openai's: its newest complete step) "
                      "or auto (the newest step of --logdir, else a fresh start); empty: a new run",
    use_fp16="train with fp16 autocast and a loss scale (= --precision fp16; openai instead keeps fp16 weights with "
             "fp32 master copies)",
    fp16_scale_growth="fp16 loss-scale growth: openai adds it to log2(scale) per good step; here the scale doubles "
                      "every round(1/value) good steps, the same rate; 0: the scale never grows",
    max_steps="stop (with a checkpoint) after this optimizer step; 0: no limit but --lr_anneal_steps (ours)",
    precision="fp32, fp16 or bf16 autocast; empty: fp16 with --use_fp16 True, else fp32 (ours)",
)
TRAIN_TYPES = dict(
    schedule_sampler=one_of("uniform", "loss-second-moment"),
    lr=run.POSITIVE_FLOAT,
    weight_decay=run.NONNEG_FLOAT,
    lr_anneal_steps=run.NONNEG_INT,
    microbatch=run.int_range(-1),  # openai: any value <= 0 means the whole batch; -1 is its spelling
    fp16_scale_growth=run.NONNEG_FLOAT,
    # the loop's flags with trainkit's types, openai's defaults; --precision also takes '' (from --use_fp16)
    **{k: loopflags.TYPES[k] for k in ("ema_rate", "log_interval", "save_interval", "max_steps")},
    precision=one_of("", *precision.MODES),
)


def check_args(args):
    """What parse-time types cannot check (they range-check every numeric flag)."""
    if not args.data_dir:
        raise UserError("--data_dir is required (an image folder or a samples .npz)")
    phema.check_args(args.ema_std, args.ema_snapshot_interval)


@run.main
def main():
    args = create_argparser().parse_args()
    check_args(args)
    r = run.setup("improved_diffusion", args, resume=args.resume_checkpoint)
    r.logger.log("creating model and diffusion...")
    model, diffusion = create_model_and_diffusion_checked(args)
    r.logger.log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
    dataset = data.load_dataset(args.data_dir, args.image_size, class_cond=args.class_cond,
                                channels=args.image_channels)
    if args.class_cond and dataset.num_classes > args.num_classes:
        raise UserError(f"{args.data_dir}: {dataset.num_classes} classes, more than --num_classes {args.num_classes}")
    task = build_task(args, model, diffusion, log=r.logger.log)
    # openai trains until --lr_anneal_steps, or forever when it is 0; --max_steps can stop sooner
    loop.Loop(r, task, data.Batches(dataset, args.batch_size, seed=args.seed),
              total_steps=loop.total_steps(args.lr_anneal_steps, args.max_steps), log_interval=args.log_interval,
              save_interval=args.save_interval, precision=task.precision.mode, seed=args.seed,
              probe=probe.from_args(args, args.image_size)).run_loop()


if __name__ == "__main__":
    main()
