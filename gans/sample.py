"""Sample a trained generator into an openai-layout npz: `python -m gans.sample --model_path F`.

Writes <logdir>/samples_{N}x{H}x{W}x{C}.npz (arr_0 uint8 NHWC; arr_1 int64 labels for the
conditional kinds, cdcgan and cgan) and beside it samples_{N}x{H}x{W}x{C}.json, what was done
(trainkit.npz's sample info: sampler "generator", 1 network evaluation per image, the count and
the seed, the model kind, the weights file and a fixed --class_label). Sample i draws its z
(then, for a conditional model without --class_label, its label) from its own generator seeded
by (--seed, i), and G runs in eval mode (BatchNorm running statistics for the DCGANs; the FC
models have none), so the file is the same whatever the number of ranks or --batch_size. The
work is split over ranks.
"""

import blobfile as bf
import torch

from trainkit import dist, npz, run, sampling
from trainkit.errors import UserError

from . import models
from .script_util import add_model_args, check_class_label, load_generator


def create_argparser():
    p = run.ArgumentParser(description="Sample a generator of gans.train (any --model kind) into an npz.")
    p.add_argument("--model_path", default="",
                   help="required: a model*.pt or ema_*.pt file, or a run directory (its latest model)")
    # --num_samples and --class_label stay plain ints: main's one-line messages are pinned by tests
    # (and a label's upper end depends on the checkpoint)
    p.add_argument("--num_samples", type=int, default=10000, help="images written to the npz (>= 1)")
    p.add_argument("--batch_size", type=run.POSITIVE_INT, default=256,
                   help="images per rank per batch (the npz does not depend on it)")
    p.add_argument("--class_label", type=int, default=-1,
                   help="cdcgan/cgan: this class for every sample (-1: random per sample)")
    add_model_args(p)
    run.add_run_args(p)
    return p


@torch.no_grad()
def draw(G, rnd, class_label=-1):
    """G's images for the samples of `rnd` (a trainkit.sampling.PerSampleRandom on G's device):
    (uint8 N,H,W,C, int64 labels or None). z is drawn first, then for a conditional G a label
    per sample (or `class_label` for every one when >= 0), so the latents are the same with or
    without --class_label. The one draw of the family: this sampler and the training probe
    (gans.task.Task.probe_images) both call it, so their noise is the same for the same seed."""
    z = rnd.randn(G.nz, 1, 1)
    y = None
    if G.num_classes:
        y = rnd.randint(G.num_classes) if class_label < 0 else torch.full((len(rnd),), class_label)
        y = y.to(device=rnd.device, dtype=torch.long)
    return npz.to_uint8(G(z, y).float()), None if y is None else y.cpu().numpy()


@run.main
def main():
    args = create_argparser().parse_args()
    if args.num_samples < 1:
        raise UserError(f"--num_samples {args.num_samples}: must be at least 1")
    # read and check the generator before the run directory is created
    G, path = load_generator(args.model_path, args)
    check_class_label(G, args.class_label, allow_random=True)
    r = run.setup("gans", args)
    device = dist.device()
    G = G.to(device)
    r.logger.log(f"sampling {args.num_samples} images from {path}")

    def sample_fn(rnd, indices):
        return draw(G, rnd, args.class_label)

    # what evaluation reads back instead of knowing the family: one forward pass of G per image
    info = {"sampler": "generator", "network_evaluations": 1, "num_samples": args.num_samples, "seed": args.seed,
            "model": models.kind_of(G), "weights": bf.basename(path),
            "class_label": args.class_label if G.num_classes and args.class_label >= 0 else None}
    out = sampling.sample_to_npz(sample_fn, args.num_samples, args.batch_size, args.seed, r.dir, device=device,
                                 info=info)
    r.logger.log(f"wrote {out}")
    r.logger.close()


if __name__ == "__main__":
    main()
