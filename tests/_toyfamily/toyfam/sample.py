"""python -m toyfam.sample --model_path RUN_DIR [--num_samples N --batch_size B --seed S --logdir DIR]"""

from trainkit import checkpoint, dist, run, sampling

from .task import Generator, draw


@run.main
def main(argv=None):
    p = run.ArgumentParser(description="the toy family's sampler")
    run.add_run_args(p)
    p.add_argument("--model_path", required=True)
    p.add_argument("--image_size", type=int, default=16)
    p.add_argument("--num_samples", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=50)
    args = p.parse_args(argv)
    ck = checkpoint.latest(args.model_path)
    weights = checkpoint.sampling_weights(ck)
    G = Generator(args.image_size)
    G.load_state_dict(ck.load(weights))
    G = G.to(dist.device()).eval()
    r = run.setup("toyfam", args)
    info = {"sampler": "linear generator", "network_evaluations": 1, "num_samples": args.num_samples,
            "seed": args.seed, "weights": weights}
    sampling.sample_to_npz(lambda rnd, indices: draw(G, rnd), args.num_samples, args.batch_size, args.seed, r.dir,
                           info=info)
    r.logger.close()


if __name__ == "__main__":
    main()
