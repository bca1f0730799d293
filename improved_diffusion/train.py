"""Train a diffusion model on images: `python -m improved_diffusion.train [openai's flags]`.

Accepts every flag of openai's scripts/image_train.py with the same defaults, plus
--max_steps, --precision fp32|fp16|bf16, --seed, --logdir, --channel_mult, --num_classes.
--ema_rate takes a comma list; --resume_checkpoint a checkpoint file, a run directory (ours or
openai's), or `auto` (the newest checkpoint of --logdir, or a fresh start when it has none).
--batch_size is per rank and per optimizer step; --microbatch N cuts it into pieces of N images
whose gradients are averaged. The loop is trainkit.loop.
"""

from trainkit import data, loop, precision, run
from trainkit.errors import UserError

from .cli import build_parser
from .resample import create_named_schedule_sampler
from .script_util import args_to_dict, create_model_and_diffusion, model_and_diffusion_defaults, \
    model_extension_defaults
from .train_util import DiffusionTask


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
    return build_parser("Train an improved-diffusion model (openai/improved-diffusion flags).", defaults)


def check_args(args):
    if not args.data_dir:
        raise UserError("--data_dir is required (an image folder or a samples .npz)")
    if args.precision and args.precision not in precision.MODES:
        raise UserError(f"--precision: {args.precision!r} is not one of {', '.join(precision.MODES)}")
    if args.schedule_sampler not in ("uniform", "loss-second-moment"):
        raise UserError(f"--schedule_sampler: {args.schedule_sampler!r} is not 'uniform' or 'loss-second-moment'")
    for flag in ("batch_size", "log_interval", "save_interval"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag}: {getattr(args, flag)} must be positive")
    for flag in ("max_steps", "lr_anneal_steps"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag}: {getattr(args, flag)} must not be negative")


def create_model_and_diffusion_checked(args):
    """create_model_and_diffusion, with configuration errors as one-line UserErrors."""
    keys = list(model_and_diffusion_defaults()) + list(model_extension_defaults())
    try:
        return create_model_and_diffusion(**args_to_dict(args, keys))
    except (ValueError, NotImplementedError) as e:
        raise UserError(f"model flags: {e}") from None


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
    task = DiffusionTask(
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
        log=r.logger.log,
    )
    # openai trains until --lr_anneal_steps, or forever when it is 0; --max_steps can stop sooner
    loop.Loop(r, task, data.Batches(dataset, args.batch_size, seed=args.seed),
              total_steps=loop.total_steps(args.lr_anneal_steps, args.max_steps), log_interval=args.log_interval,
              save_interval=args.save_interval, precision=task.precision.mode, seed=args.seed).run_loop()


if __name__ == "__main__":
    main()
