"""Sample a trained model into an npz: `python -m improved_diffusion.sample --model_path PATH`.

Accepts every flag of openai's scripts/image_sample.py with the same defaults. Extensions:
--model_path may be a training run directory (its newest checkpoint's settled EMA, see cli.settled_ema; model flags are then read
from the run's options.json unless given), --seed, --logdir, --ddim_eta, --class_labels,
--precision. Each sample index owns a generator seeded from (--seed, index) that draws its
label, x_T and every step's noise, so the npz does not depend on --batch_size or the number
of ranks.
"""

import numpy as np
import torch

from trainkit import checkpoint, dist, npz, precision, run, sampling
from trainkit.errors import UserError

from .cli import apply_saved_model_flags, argv, build_parser, resolve_model_file, saved_options
from .train import create_model_and_diffusion_checked


def create_argparser():
    defaults = dict(
        clip_denoised=True,
        num_samples=10000,
        batch_size=16,
        use_ddim=False,
        model_path="",
        # extensions
        ddim_eta=0.0,
        class_labels="",  # comma list of labels, repeated over the samples; empty: random labels
        precision="fp32",
        batch_invariant=True,  # CPU: fixed blocks of 8 rows per model call (InBlocks): the npz ignores batch size / ranks
    )
    return build_parser("Sample an improved-diffusion model into samples_NxHxWxC.npz.", defaults)


def parse_labels(text, num_classes):
    try:
        labels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--class_labels {text!r}: expected comma-separated integers") from None
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise UserError(f"--class_labels: {bad[0]} is outside 0..{num_classes - 1}")
    return labels


def load_model(args, log):
    """The model of args.model_path (a .pt state dict or a run directory), in eval mode."""
    path = resolve_model_file(args.model_path)
    model, diffusion = create_model_and_diffusion_checked(args)
    checkpoint.load_into(model, checkpoint.load(path), path, hint="check the model flags")
    log.log(f"loaded {path}")
    return model.to(dist.device()).eval(), diffusion


SAMPLE_BLOCK = 8  # rows per model call in batch-invariant sampling


class InBlocks:
    """Calls the model on fixed blocks of `block` rows, sample i always in row i % block of the
    call for block i // block (rows of absent samples are zeros).

    CPU convolution and GEMM kernels pick their blocking from the batch size, and may treat
    rows by their position, so a sample's output changes in the last bits with the batch it
    is in (measured: 1e-7, enough to flip uint8 pixels after a few hundred steps). No kernel
    here mixes the values of different rows, so with the call size and the row fixed by the
    sample index, a sample is computed the same way whatever --batch_size or the number of
    ranks (tests/test_id_train.py). Used on the CPU; on GPUs the batch is kept as it is (and
    bitwise equality is not promised). Blocks of 8 keep most of batching's speed (2.5x batch
    1 on the digits model); block 1 is one sample per call.
    """

    def __init__(self, model, indices, block):
        self.model = model
        self.block = block
        self.groups = {}  # block number -> (rows of the batch, their rows in the call)
        for row, i in enumerate(indices):
            rows, slots = self.groups.setdefault(i // block, ([], []))
            rows.append(row)
            slots.append(i % block)

    def _padded(self, v, rows, slots):
        out = v.new_zeros((self.block, *v.shape[1:]))
        out[slots] = v[rows]
        return out

    def __call__(self, x, t, **kwargs):
        out = None
        for rows, slots in self.groups.values():
            y = self.model(self._padded(x, rows, slots), self._padded(t, rows, slots),
                           **{k: self._padded(v, rows, slots) for k, v in kwargs.items()})[slots]
            if out is None:
                out = y.new_empty((x.shape[0], *y.shape[1:]))
            out[rows] = y
        return out


def batch_invariant_block(args) -> int:
    """Rows per model call with --batch_invariant on the CPU; 0 where the batch is kept."""
    return SAMPLE_BLOCK if args.batch_invariant and dist.device().type == "cpu" else 0


def make_sample_fn(model, diffusion, args, prec):
    block = batch_invariant_block(args)
    labels = parse_labels(args.class_labels, args.num_classes) if args.class_labels else None
    shape = (args.image_channels, args.image_size, args.image_size)
    loop = diffusion.ddim_sample_loop if args.use_ddim else diffusion.p_sample_loop
    extra = {"eta": args.ddim_eta} if args.use_ddim else {}

    def sample_fn(rnd, indices):
        net = InBlocks(model, indices, block) if block else model
        kwargs = {}
        y = None
        if args.class_cond:
            # Drawn first from each sample's generator; chosen labels draw nothing.
            y = (torch.tensor([labels[i % len(labels)] for i in indices], device=rnd.device) if labels
                 else rnd.randint(args.num_classes))
            kwargs["y"] = y
        noise = rnd.randn(*shape)
        with prec.autocast():
            x = loop(net, (len(indices), *shape), noise=noise, clip_denoised=args.clip_denoised,
                     model_kwargs=kwargs, device=rnd.device, noise_fn=lambda like: rnd.randn(*like.shape[1:]),
                     **extra)
        return npz.to_uint8(x.float()), (None if y is None else y.cpu().numpy().astype(np.int64))

    return sample_fn


@run.main
def main():
    args = create_argparser().parse_args()
    if args.precision not in precision.MODES:
        raise UserError(f"--precision: {args.precision!r} is not one of {', '.join(precision.MODES)}")
    if args.num_samples < 1 or args.batch_size < 1:
        raise UserError("--num_samples and --batch_size must be positive")
    if args.model_path:
        apply_saved_model_flags(args, saved_options(args.model_path), argv())
    r = run.setup("improved_diffusion", args)
    model, diffusion = load_model(args, r.logger)
    prec = precision.Precision(args.precision, dist.device())
    r.logger.log(f"sampling {args.num_samples} images, {diffusion.num_timesteps} steps "
                 f"({'DDIM eta=%g' % args.ddim_eta if args.use_ddim else 'ancestral'})...")
    with torch.no_grad():
        path = sampling.sample_to_npz(make_sample_fn(model, diffusion, args, prec), args.num_samples, args.batch_size,
                                      args.seed, r.dir, block=batch_invariant_block(args) or 1)
    r.logger.log(f"saved {path}")
    r.logger.log("sampling complete")
    r.logger.close()


if __name__ == "__main__":
    main()
