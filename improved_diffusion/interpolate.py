"""Interpolation in x_T, decoded by a deterministic sampler: `python -m improved_diffusion.interpolate`.

  python -m improved_diffusion.interpolate --model_path RUN --seeds 0,1,2 --num_steps 8
  python -m improved_diffusion.interpolate --model_path RUN --from_images A.npz --pairs 0,5

The x_T of seed s is the one `improved_diffusion.sample --seed s` draws for sample 0 (with a
fixed --class_labels on a class-conditional model), so with `--sampler ddim --steps N` the
first and last image of a row are that command's sample 0 for the two seeds (bitwise on the
CPU, where both call the model on blocks of 8 rows with the image in row 0). --from_images takes
images (a samples npz or an image folder) instead of seeds, turns each into its x_T by DDIM
inversion over the same --steps and --time_schedule (samplers.invert), and interpolates between
those: the row's ends are then the images' reconstructions. One row per consecutive pair (of
--seeds or of --pairs) and --method; the PNG grid (--out, default <logdir>/interpolation.png)
and `<out without .png>.npz` (arr_0 uint8 NHWC, the grid's images row-major, arr_1 labels for a
class-conditional model) are written. Model flags come from the run's options.json.
"""

import torch

from trainkit import dist, npz, precision, run
from trainkit.errors import UserError
from trainkit.interpolation import parse_seeds

from . import control
from .cli import apply_saved_model_flags, argv, build_parser, saved_options
from .sample import load_model


def create_argparser():
    defaults = control.control_defaults(seeds="0,1", num_steps=8, from_images="", pairs="0,1")
    parser = build_parser("Interpolate an improved-diffusion model in x_T between seeds or inverted images.",
                          defaults, helps=control.CONTROL_HELP, types=control.CONTROL_TYPES)
    parser.add_argument("--method", default="slerp", choices=("lerp", "slerp", "both"),
                        help="slerp: along the great circle between the x_T; lerp: the straight line; both: a row "
                             "of each")
    control.add_sampler_args(parser)
    return parser


def interpolation_x_T(ends, num_steps, methods):
    """(rows x num_steps, C, H, W): for each consecutive pair of `ends` (x_T tensors) and each
    method, a row from the first to the second; and the grid positions of the rows' ends."""
    rows, pinned = [], []
    for a, b in zip(ends, ends[1:]):
        for m in methods:
            start = len(rows) * num_steps
            rows.append(control.interpolation_row(a, b, num_steps, m))
            pinned += [start, start + num_steps - 1]
    return torch.cat(rows), pinned


@run.main
def main():
    args = create_argparser().parse_args()
    if args.model_path:
        apply_saved_model_flags(args, saved_options(args.model_path), argv())
    control.check_args(args)
    methods = ["lerp", "slerp"] if args.method == "both" else [args.method]
    if args.from_images:
        picks = parse_seeds(args.pairs, "--pairs", "images")
    else:
        seeds = parse_seeds(args.seeds)
    control.refuse_existing_out(args.out)
    images = None
    if args.from_images:
        inputs = control.InputImages(args.from_images, args.image_size, args.image_channels)
        bad = [i for i in picks if not 0 <= i < len(inputs)]
        if bad:
            raise UserError(f"--pairs: image {bad[0]} is outside 0..{len(inputs) - 1} of {args.from_images}")
        images, _ = inputs.take(picks)
    r = run.setup("improved_diffusion", args, role="interpolation")
    png, npz_path = control.output_paths(args.out, r.dir, "interpolation.png")
    model, diffusion = load_model(args, r.logger)
    dec = control.Decoder(model, diffusion, args, precision.Precision(args.precision, dist.device()))
    shape = (args.image_channels, args.image_size, args.image_size)
    if dist.is_main():  # a few dozen images: one rank makes them, the others wait
        with dist.rank_zero_only("improved_diffusion.interpolate: grid"):
            with torch.no_grad():
                if images is not None:
                    x0 = control.to_model_input(images, dist.device())
                    ends = list(dec.invert(x0, control.label_tensor(args, len(picks), x0.device)))
                    what = f"images {picks} of {args.from_images} (DDIM-inverted, {args.steps} steps)"
                else:
                    ends = [control.seed_x_T(s, shape).to(dist.device()) for s in seeds]
                    what = f"seeds {seeds}"
                x_T, pinned = interpolation_x_T(ends, args.num_steps, methods)
                labels = control.label_tensor(args, len(x_T), x_T.device)
                x = dec.decode(x_T, labels, control.pinned_indices(len(x_T), pinned))
            control.write_grid_and_npz(npz.to_uint8(x), None if labels is None else labels.cpu().numpy(),
                                       args.num_steps, png, npz_path)
            r.logger.log(f"wrote {png} and {npz_path}: {len(x_T) // args.num_steps} rows ({', '.join(methods)}) x "
                         f"{args.num_steps} images between {what}; {args.sampler}, {args.steps} steps, "
                         f"{args.time_schedule} time schedule")
    dist.barrier()
    r.logger.close()


if __name__ == "__main__":
    main()
