"""python -m toyfam.train --data_dir DIR [--image_size 16] [trainkit's loop flags]"""

from trainkit import data, loop, loopflags, run

from .task import build_task


@run.main
def main(argv=None):
    p = run.ArgumentParser(description="the toy family's training")
    run.add_run_args(p)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--image_size", type=int, default=16)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    loopflags.add_args(p, skip=("precision",))
    args = p.parse_args(argv)
    r = run.setup("toyfam", args, resume=args.resume_checkpoint)
    batches = data.Batches(data.load_dataset(args.data_dir, args.image_size, channels=1), args.batch_size,
                           seed=args.seed)
    loop.Loop(r, build_task(args), batches, total_steps=args.max_steps, log_interval=args.log_interval,
              save_interval=args.save_interval, seed=args.seed).run_loop()


if __name__ == "__main__":
    main()
