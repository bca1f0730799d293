"""Bits/dim of a model on a data set: `python -m improved_diffusion.nll --data_dir D --model_path M`.

Accepts every flag of openai's scripts/image_nll.py with the same defaults. The first
--num_samples images of --data_dir (in file order) are split over the ranks; each image
owns a generator seeded from (--seed, index) for the noise of every timestep, so the
figure does not depend on the number of ranks or --batch_size. Like openai it writes
{vb,mse,xstart_mse}_terms.npz (arr_0: the per-timestep terms averaged over images) in the
run directory, and logs the running bits/dim; the final figure is also in nll.json.
"""

import json

import numpy as np
import torch

from trainkit import data, dist, fileio, run, sampling
from trainkit.errors import UserError

from .cli import apply_saved_model_flags, argv, build_parser, saved_options
from .draw import InBlocks
from .sample import load_model


def create_argparser():
    defaults = dict(data_dir="", clip_denoised=True, num_samples=1000, batch_size=1, model_path="",
                    batch_invariant=True)
    helps = dict(
        data_dir="the images to evaluate (required): an image folder or a samples .npz",
        num_samples="evaluate the first N images of --data_dir (in file order; fewer if it has fewer)",
        batch_size="images per rank per evaluation batch (the figure does not depend on it)",
        batch_invariant="on the CPU, call the model on one image at a time, so that the figure is the same for any "
                        "--batch_size or number of ranks; False: whole batches (faster) (ours)",
    )
    return build_parser("Evaluate the variational bound (bits/dim) of an improved-diffusion model.", defaults,
                        helps=helps)


@run.main
def main():
    args = create_argparser().parse_args()
    if not args.data_dir:
        raise UserError("--data_dir is required (an image folder or a samples .npz)")
    if args.model_path:
        apply_saved_model_flags(args, saved_options(args.model_path), argv())
    r = run.setup("improved_diffusion", args, role="nll")
    log = r.logger
    model, diffusion = load_model(args, log)
    # Batch-invariant on the CPU: one image per model call (InBlocks with blocks of 1; openai's
    # --batch_size 1 default would leave bigger blocks mostly padding).
    invariant = args.batch_invariant and dist.device().type == "cpu"
    dataset = data.load_dataset(args.data_dir, args.image_size, class_cond=args.class_cond,
                                channels=args.image_channels)
    n = min(args.num_samples, len(dataset))
    if n < args.num_samples:
        log.log(f"{args.data_dir} has {len(dataset)} images: evaluating {n}")
    mine = sampling.rank_indices(n)
    rows = []  # (index, total_bpd, vb (T,), mse (T,), xstart_mse (T,))
    for start in range(0, len(mine), args.batch_size):
        chunk = mine[start:start + args.batch_size]
        x = dataset.images[chunk].float().div(127.5).sub(1.0).to(dist.device())
        kwargs = {"y": dataset.labels[chunk].to(dist.device())} if args.class_cond else {}
        rnd = sampling.PerSampleRandom(args.seed, chunk, dist.device())
        net = InBlocks(model, chunk, 1) if invariant else model
        with torch.no_grad():
            m = diffusion.calc_bpd_loop(net, x, clip_denoised=args.clip_denoised, model_kwargs=kwargs,
                                        noise_fn=lambda like: rnd.randn(*like.shape[1:]))
        for j, i in enumerate(chunk):
            rows.append((i, float(m["total_bpd"][j]), m["vb"][j].cpu().numpy(), m["mse"][j].cpu().numpy(),
                         m["xstart_mse"][j].cpu().numpy()))
        log.log(f"rank {dist.rank()}: done {len(rows)} of {len(mine)}: bpd={np.mean([r_[1] for r_ in rows]):.5f}")
    gathered = dist.gather_object(rows)
    if dist.is_main():
        with dist.rank_zero_only("nll: terms and nll.json"):
            everything = sorted((row for part in gathered for row in part), key=lambda row: row[0])
            bpd = float(np.mean([row[1] for row in everything]))
            for k, name in ((2, "vb"), (3, "mse"), (4, "xstart_mse")):
                path = f"{r.dir}/{name}_terms.npz"
                with fileio.atomic_path(path) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, np.mean(np.stack([row[k] for row in everything]), axis=0))
                log.log(f"saved {name} terms to {path}")
            fileio.write_text(f"{r.dir}/nll.json", json.dumps({"bpd": bpd, "num_samples": len(everything),
                                                                  "data_dir": args.data_dir}) + "\n")
            log.logkv("bpd", bpd)
            log.logkv("num_samples", len(everything))
    log.dumpkvs()
    log.log("evaluation complete")
    log.close()


if __name__ == "__main__":
    main()
