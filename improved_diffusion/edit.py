"""SDEdit (Meng et al. 2022): partial noising and deterministic denoising of given images.

  python -m improved_diffusion.edit --model_path RUN --images A.npz --t0 0.25,0.5,0.75,1.0

The first --num_images images of --images (a samples npz or an image folder, resized and
converted as training reads data) are noised to the timestep at fraction t0 of the process,
x = alpha x0 + sigma eps (eps of image i from the generator of sample index i of --seed, the
same for every t0), and decoded back to t = 0 by --sampler over the share t0 of --steps
(samplers.sdedit). Small t0 keeps the image; t0 = 1 starts from (almost) pure noise, a sample
unrelated to it. The PNG grid (--out, default <logdir>/edit.png) has the input row, then one
row per t0; `<out without .png>.npz` holds the outputs (arr_0 uint8 NHWC, t0 by t0; arr_1 the
labels for a class-conditional model). Model flags come from the run's options.json.
"""

import numpy as np
import torch

from trainkit import dist, npz, precision, run, sampling
from trainkit.errors import UserError

from . import control
from .cli import apply_saved_model_flags, argv, build_parser, saved_options
from .sample import load_model


def create_argparser():
    defaults = control.control_defaults(num_images=8, t0="0.25,0.5,0.75,1.0", class_label=-1)
    parser = build_parser("SDEdit images with an improved-diffusion model.", defaults, helps=control.CONTROL_HELP,
                          types=control.CONTROL_TYPES)
    parser.add_argument("--images", "--from_images", dest="images", default="",
                        help="the images to edit (required): a samples .npz or an image folder (first --num_images)")
    control.add_sampler_args(parser)
    return parser


def parse_t0(text):
    try:
        values = [float(s) for s in str(text).replace(" ", "").split(",") if s]
    except ValueError:
        raise UserError(f"--t0 {text!r}: expected a comma list of fractions in (0, 1], e.g. 0.25,0.5,1") from None
    if not values:
        raise UserError("--t0 is empty: give fractions in (0, 1], e.g. 0.25,0.5,1")
    for v in values:
        if not 0 < v <= 1:  # also NaN
            raise UserError(f"--t0 {v:g}: each value must be in (0, 1] (a fraction of the diffusion process)")
    return values


def load_inputs(args):
    """(uint8 N,C,H,W images, int64 labels or None, images available) of the first --num_images
    of --images; labels for a class-conditional model: the input's (--class_label -1) or
    --class_label."""
    want_labels = args.class_cond and args.class_label == -1
    inputs = control.InputImages(args.images, args.image_size, args.image_channels, want_labels=want_labels)
    images, labels = inputs.take(range(min(args.num_images, len(inputs))))
    if args.class_cond and not want_labels:
        labels = torch.full((len(images),), args.class_label, dtype=torch.long)
    if want_labels and int(labels.max()) >= args.num_classes:
        raise UserError(f"{args.images}: label {int(labels.max())} is outside the model's classes "
                        f"0..{args.num_classes - 1} (give --class_label)")
    return images, labels, len(inputs)


@run.main
def main():
    args = create_argparser().parse_args()
    if not args.images:
        raise UserError("--images is required (a samples .npz or an image folder)")
    t0s = parse_t0(args.t0)
    if args.model_path:
        apply_saved_model_flags(args, saved_options(args.model_path), argv())
    control.check_args(args, allow_input_labels=True)
    control.refuse_existing_out(args.out)
    images, labels, available = load_inputs(args)
    r = run.setup("improved_diffusion", args, role="edit")
    png, npz_path = control.output_paths(args.out, r.dir, "edit.png")
    if len(images) < args.num_images:
        r.logger.log(f"{args.images} has {available} images: editing {len(images)}")
    model, diffusion = load_model(args, r.logger)
    dec = control.Decoder(model, diffusion, args, precision.Precision(args.precision, dist.device()))
    n = len(images)
    if dist.is_main():  # a few dozen images: one rank makes them, the others wait
        with dist.rank_zero_only("improved_diffusion.edit: grid"):
            x0 = control.to_model_input(images, dist.device())
            y = None if labels is None else labels.to(x0.device)
            eps = sampling.PerSampleRandom(args.seed, range(n), x0.device).randn(*x0.shape[1:])
            with torch.no_grad():
                outs = [npz.to_uint8(dec.sdedit(x0, eps, t0, y)) for t0 in t0s]
            edited = np.concatenate(outs)
            grid = np.concatenate([images.permute(0, 2, 3, 1).numpy(), edited])
            out_labels = None if labels is None else np.tile(labels.numpy(), len(t0s))
            control.write_grid_and_npz(grid, None, n, png, npz_path, npz_images=edited, npz_labels=out_labels)
            r.logger.log(f"wrote {png} (input row, then t0 = {', '.join(f'{t:g}' for t in t0s)}) and {npz_path}: "
                         f"{n} images; {args.sampler}, {args.steps} steps for t0 = 1, "
                         f"{args.time_schedule} time schedule")
    dist.barrier()
    r.logger.close()


if __name__ == "__main__":
    main()
