"""Interpolation between seeds in x_T or in the latents z: `python -m ddgan.interpolate --model_path RUN`.

DDGAN's chain starts at x_T ~ N(0, I) and at each of its T steps calls the generator on the
current x_{t+1} with a fresh latent z, then draws x_t from the posterior with fresh noise. Seed
s stands for every one of those draws of sample 0 of `ddgan.sample --seed s` (its generator
draws x_T, then per step z and the posterior noise, in that order). For each consecutive pair
(a, b) of --seeds, each --mode and each --method, the grid gets one row of --num_steps images:

- mode x_T: x_T goes from a's to b's; every z and the posterior noise are a's;
- mode z: every step's z goes from a's to b's (each step's z interpolated on its own); x_T and
  the posterior noise are a's.

So both rows start at seed a's sample; they end at a chain that shares everything with a but the
x_T (or the z's) of b. The PNG grid (--out, default <logdir>/interpolation.png) and
`<out without .png>.npz` (arr_0 uint8 NHWC, the grid's images row-major) are written. Model
flags come from the run's options.json, as for ddgan.sample.
"""

import torch

from trainkit import checkpoint, dist, npz, run, sampling
from trainkit.interpolation import interpolation_row, output_paths, parse_seeds, write_grid_and_npz

from . import script_util
from .sample import load_generator, model_options

FAMILY = "ddgan_interpolate"
MODES = ("x_T", "z")


def create_parser():
    p = run.ArgumentParser(description=__doc__.split("\n")[0])
    script_util.add_model_args(p, defaults=False)
    a = p.add_argument
    a("--model_path", required=True, help="run directory, checkpoint file or netG_*.pth")
    a("--weights", default="auto", choices=["auto", "ema", "raw"],
      help="generator weights: auto = the average --model_path names, else the step's recorded sampling "
           "weights (the EMA with --use_ema); ema; or raw")
    a("--seeds", default="0,1",
      help="comma list of at least two seeds; seed s stands for every draw of ddgan.sample --seed s's sample 0")
    a("--num_steps", type=run.int_range(2), default=8, help="images per row, both ends included (>= 2)")
    a("--method", default="slerp", choices=("lerp", "slerp", "both"),
      help="lerp: the straight line; slerp: the great circle (keeps a Gaussian draw's norm); both: one row of each")
    a("--mode", default="both", choices=MODES + ("both",),
      help="x_T: interpolate the starting noise, z fixed; z: interpolate every step's latent, x_T fixed; both")
    a("--out", default="", help="PNG path (default <logdir>/interpolation.png); the npz goes beside it")
    run.add_run_args(p)
    return p


def seed_draws(seed, shape, nz, num_timesteps):
    """Every random draw of sample 0 of `ddgan.sample --seed SEED`, in the order it makes them:
    (x_T (C, H, W), [z (nz,) per step], [posterior noise (C, H, W) per step]), steps in chain
    order (t = T-1 first)."""
    rnd = sampling.PerSampleRandom(seed, [0])
    x_T = rnd.randn(*shape)[0]
    zs, noises = [], []
    for _ in range(num_timesteps):
        zs.append(rnd.randn(nz)[0])
        noises.append(rnd.randn(*shape)[0])
    return x_T, zs, noises


def interpolation_inputs(seeds, shape, nz, num_timesteps, num_steps, modes, methods):
    """(x_T (R x num_steps, C, H, W), per-step z's, per-step noises), rows pair by pair, mode by
    mode, method by method."""
    draws = {s: seed_draws(s, shape, nz, num_timesteps) for s in seeds}
    x_rows, z_rows, n_rows = [], [], []
    for a, b in zip(seeds, seeds[1:]):
        (xa, za, na), (xb, zb, _) = draws[a], draws[b]
        for mode in modes:
            for m in methods:
                if mode == "x_T":
                    x_rows.append(interpolation_row(xa, xb, num_steps, m))
                    z_rows.append([z.expand(num_steps, -1) for z in za])
                else:
                    x_rows.append(xa.expand(num_steps, *shape))
                    z_rows.append([interpolation_row(u, v, num_steps, m) for u, v in zip(za, zb)])
                n_rows.append([n.expand(num_steps, *shape) for n in na])
    x_T = torch.cat(x_rows)
    zs = [torch.cat([row[k] for row in z_rows]) for k in range(num_timesteps)]
    noises = [torch.cat([row[k] for row in n_rows]) for k in range(num_timesteps)]
    return x_T, zs, noises


class Replay:
    """The `randn` of Diffusion.sample, handing out given tensors in its order of calls: z, then
    the posterior noise, step by step."""

    def __init__(self, zs, noises, device):
        self.queue = [t.to(device) for pair in zip(zs, noises) for t in pair]

    def __call__(self, *shape):
        out = self.queue.pop(0)
        if tuple(out.shape[1:]) != tuple(shape):
            raise AssertionError(f"replayed draw {tuple(out.shape)} where the chain asked for {shape}")
        return out


@run.main
def main():
    args = create_parser().parse_args()
    seeds = parse_seeds(args.seeds)
    if args.out:
        output_paths(args.out, "", "")
    checkpoint.resolve(args.model_path)  # a missing path is the first thing to report
    o = model_options(args)
    script_util.check_model_options(o)
    r = run.setup(FAMILY, args, role="interpolation")
    png, npz_path = output_paths(args.out, r.dir, "interpolation.png")
    device = dist.device()
    generator, path = load_generator(args, o, device)
    diffusion = script_util.build_diffusion(o)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    methods = ["lerp", "slerp"] if args.method == "both" else [args.method]
    shape = (o["num_channels"], o["image_size"], o["image_size"])
    if dist.is_main():  # a few dozen images: one rank makes them, the others wait
        with dist.rank_zero_only("ddgan.interpolate: grid"):
            x_T, zs, noises = interpolation_inputs(seeds, shape, o["nz"], diffusion.num_timesteps, args.num_steps,
                                                   modes, methods)
            with torch.no_grad():
                x = diffusion.sample(generator, x_T.to(device), o["nz"], randn=Replay(zs, noises, device))
            write_grid_and_npz(npz.to_uint8(x), None, args.num_steps, png, npz_path)
            r.logger.log(f"wrote {png} and {npz_path} from {path}: {len(x_T) // args.num_steps} rows (modes "
                         f"{', '.join(modes)}; {', '.join(methods)}) x {args.num_steps} images, seeds {seeds}")
    dist.barrier()
    r.logger.close()


if __name__ == "__main__":
    main()
