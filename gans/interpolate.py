"""Latent interpolation between seeds, as a PNG grid: `python -m gans.interpolate --model_path F`.

The latent of seed s is sample 0 of `gans.sample --seed s`. For each consecutive pair of
--seeds and each --method (lerp, slerp or both) the grid gets one row of --num_steps images
going from the first seed's image to the second's. slerp follows the great circle between the
two latents, which keeps them at the norm Gaussian latents have (lerp's midpoints are shorter);
the two rows side by side show the difference.
"""

import blobfile as bf
import torch

from trainkit import dist, fileio, run
from trainkit.errors import UserError
from trainkit.interpolation import interpolation_row, parse_seeds

from .script_util import add_model_args, check_class_label, load_generator, seed_latent


def create_argparser():
    p = run.ArgumentParser(description="Interpolate a generator of gans.train (any --model kind) between seeds.")
    p.add_argument("--model_path", default="",
                   help="required: a model*.pt or ema_*.pt file, or a run directory (its latest model)")
    p.add_argument("--seeds", default="0,1",
                   help="comma list of at least two seeds; seed s stands for the latent of gans.sample --seed s")
    p.add_argument("--num_steps", type=run.int_range(2), default=8, help="images per row, both ends included (>= 2)")
    p.add_argument("--method", default="both", choices=("lerp", "slerp", "both"),
                   help="lerp: the straight line between the latents; slerp: the great circle (keeps their norm); "
                        "both: one row of each")
    p.add_argument("--class_label", type=run.NONNEG_INT, default=0,
                   help="cdcgan/cgan: the class of every image (ignored by unconditional models)")
    p.add_argument("--out", default="", help="PNG path (default <logdir>/interpolation.png)")
    add_model_args(p)
    run.add_run_args(p)
    return p


def interpolation_latents(seeds, nz, num_steps, methods):
    """(rows x num_steps, nz, 1, 1) latents, row-major: pair by pair, method by method."""
    rows = []
    for a, b in zip(seeds, seeds[1:]):
        za, zb = seed_latent(a, nz), seed_latent(b, nz)
        rows += [interpolation_row(za, zb, num_steps, m) for m in methods]  # trainkit's lerp / slerp
    return torch.cat(rows)


@run.main
def main():
    args = create_argparser().parse_args()
    seeds = parse_seeds(args.seeds)
    G, path = load_generator(args.model_path, args)
    check_class_label(G, args.class_label if G.num_classes else -1, allow_random=False)
    if args.out and bf.exists(args.out):
        raise UserError(f"--out {args.out}: already exists; not overwriting it (choose another path)")
    r = run.setup("gans", args, role="interpolation")
    out = args.out or f"{r.dir}/interpolation.png"
    methods = ["lerp", "slerp"] if args.method == "both" else [args.method]
    # on the training device, as the samplers: the latents are drawn on the host (sample 0 of
    # gans.sample's per-sample generators), then moved
    device = dist.device()
    G = G.to(device)
    z = interpolation_latents(seeds, G.nz, args.num_steps, methods).to(device)
    y = torch.full((len(z),), args.class_label, dtype=torch.long, device=device) if G.num_classes else None
    if dist.is_main():  # a few dozen images: one rank makes them, the others wait
        with dist.rank_zero_only("gans.interpolate: grid"):
            from torchvision.utils import save_image  # ~2.5 s to import; only the writing rank needs it

            with torch.no_grad():
                images = G(z, y).float()
            with fileio.atomic_path(out) as tmp:
                save_image(images, tmp, nrow=args.num_steps, normalize=True, value_range=(-1, 1), format="png")
            r.logger.log(f"wrote {out}: {len(z) // args.num_steps} rows ({', '.join(methods)}) x "
                         f"{args.num_steps} images, seeds {seeds}")
    dist.barrier()
    r.logger.close()


if __name__ == "__main__":
    main()
