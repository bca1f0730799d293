"""Sample a trained DDGAN to an openai-layout npz (the role of test_ddgan.py).

  python -m ddgan.sample --model_path RUN_DIR_OR_CHECKPOINT --num_samples 50000 --batch_size 200

--model_path takes a run directory (its latest checkpoint), any file of one step
(model000100.pt, ema_0.9999_000100.pt...), or a released netG_*.pth. Model flags are read from
the run's options.json when there is one; flags given on the command line win, and a released
file without options needs them all (e.g. --ch_mult 1 2 2 2 --n_mlp 4 for CIFAR-10).
--weights ema (default when the step has an EMA file) or raw. Sample i uses its own random
generator seeded from (--seed, i) for x_T, then z and the posterior noise at each step, so the
npz is the same for any number of processes and any --batch_size.
"""


import blobfile as bf
import torch

from trainkit import checkpoint, dist, npz, run, sampling
from trainkit.errors import UserError

from . import script_util

FAMILY = "ddgan_sample"


def create_parser():
    p = run.ArgumentParser(description=__doc__.split("\n")[0])
    script_util.add_model_args(p, defaults=False)
    a = p.add_argument
    a("--model_path", required=True, help="run directory, checkpoint file or netG_*.pth")
    a("--weights", default="auto", choices=["auto", "ema", "raw"],
      help="EMA or raw generator weights (auto: EMA when the checkpoint has it)")
    a("--num_samples", type=int, default=50000)
    a("--batch_size", type=int, default=200, help="sample generating batch size (per process)")
    a("--fid_stats", default="", help="FID statistics npz (mu, sigma): compute the samples' FID against it "
      "at the end (test_ddgan.py's --compute_fid), with its dimension choosing the Inception block")
    a("--inception_weights", default="", help="local pytorch-fid Inception weights file (offline machines)")
    run.add_run_args(p)
    return p


def model_options(args):
    """Reference defaults < the run's options.json < flags given on the command line."""
    defaults = vars(script_util.add_model_args(run.ArgumentParser()).parse_args([]))
    saved = {}
    path = args.model_path.rstrip("/")
    directory = path if bf.isdir(path) else bf.dirname(path)
    if bf.exists(bf.join(directory, "options.json")):
        saved = run.load_options(directory)
    given = {k: v for k, v in vars(args).items() if k in defaults and v is not None}
    o = dict(defaults)
    o.update({k: v for k, v in saved.items() if k in defaults})
    o.update(given)
    return o


def pick_weights(ck, choice, ema_decay=None):
    """(prefix, path) of the generator weights to use."""
    emas = [p for p in ck.prefixes() if p.startswith("ema_")]
    if ema_decay is not None:
        preferred = [p for p in emas if p == f"ema_{float(ema_decay)!r}_"]
        emas = preferred or emas
    if choice == "ema" and not emas:
        raise UserError(f"{ck.dir}: step {ck.step} has no EMA weights (trained without --use_ema); "
                        "use --weights raw")
    if choice in ("ema", "auto") and emas:
        return emas[0], ck.path(emas[0])
    return "model", ck.path("model")


def load_generator(args, o, device):
    ck = checkpoint.resolve(args.model_path)
    prefix, path = pick_weights(ck, args.weights, o.get("ema_decay"))
    generator = script_util.build_generator(o)
    script_util.load_weights(generator, checkpoint.load(path), path)
    return generator.to(device).eval(), path


@torch.no_grad()
def main_sample(args):
    if args.num_samples < 1:
        raise UserError(f"--num_samples {args.num_samples} must be positive")
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size} must be positive")
    checkpoint.resolve(args.model_path)  # a missing path is the first thing to report
    fid_dims = len(npz.read_stats(args.fid_stats)[0]) if args.fid_stats else None  # fail before sampling
    o = model_options(args)
    script_util.check_model_options(o)
    r = run.setup(FAMILY, args)  # a --logdir holding a run (the training one, say): a fresh subfolder
    device = dist.device()
    generator, path = load_generator(args, o, device)
    diffusion = script_util.build_diffusion(o)
    r.logger.log(f"sampling {args.num_samples} images from {path} "
                 f"({diffusion.num_timesteps} steps) on {dist.world_size()} process(es)")
    shape = (o["num_channels"], o["image_size"], o["image_size"])

    def sample_fn(rnd, indices):
        x_init = rnd.randn(*shape)
        x = diffusion.sample(generator, x_init, o["nz"], randn=rnd.randn)
        return npz.to_uint8(x), None

    out = sampling.sample_to_npz(sample_fn, args.num_samples, args.batch_size, args.seed, r.dir,
                                 device=device)
    r.logger.log(f"wrote {out}")
    if args.fid_stats:
        from evaluations import fid  # only when asked: sampling itself needs no Inception network

        value = fid.fid_of_paths(out, args.fid_stats, dims=fid_dims, weights=args.inception_weights or None)
        r.logger.logkv("fid", value)
        r.logger.logkv("fid_dims", fid_dims)
        r.logger.dumpkvs()
        r.logger.log(f"FID: {value:.6f} against {args.fid_stats}")
    r.logger.close()
    return out


@run.main
def main():
    main_sample(create_parser().parse_args())


if __name__ == "__main__":
    main()
