"""Sample a trained DDGAN to an openai-layout npz (the role of test_ddgan.py).

  python -m ddgan.sample --model_path RUN_DIR_OR_CHECKPOINT --num_samples 50000 --batch_size 200
  python -m ddgan.sample --exp ddgan_cifar10_exp1 --epoch_id 50 --compute_fid --real_img_dir STATS ...

test_ddgan.py's own flags work: --exp NAME --epoch_id N loads
./saved_info/dd_gan/{--dataset}/{NAME}/netG_{N}.pth (an --exp folder of ddgan.train, or of the
reference's train_ddgan.py, whose model flags must then be given); --compute_fid scores the
samples against --real_img_dir: an image folder, a pytorch-fid statistics .npz or DDGAN's .npy
statistics; without it, test_ddgan.py's file for --dataset (pytorch_fid/cifar10_train_stat.npy,
celeba_256_stat.npy, lsun_church_stat.npy). A reference of another resolution than --image_size
is refused before sampling. With those flags and no --logdir (nor $OPENAI_LOGDIR), images also go where
test_ddgan.py writes them: ./generated_samples/{dataset}/{i}.jpg with --compute_fid, else
./samples_{dataset}.jpg (one batch); an existing non-empty folder or file is never written
into: a fresh `-<time>` name is used. The FID itself is computed from the lossless npz.

--model_path takes a run directory (its latest checkpoint), any file of one step
(model000100.pt, ema_0.9999_000100.pt...), or a released netG_*.pth. Model flags are read from
the run's options.json when there is one; flags given on the command line win, and a released
file without options needs them all (e.g. --ch_mult 1 2 2 2 --n_mlp 4 for CIFAR-10).
--weights auto (default) samples what the training run recorded for the step (its EMA with
--use_ema; trainkit.checkpoint.sampling_weights), or an average's file when --model_path names
one (ema_0.99_000100.pt is sampled as it is); ema or raw choose. Sample i uses its own random
generator seeded from (--seed, i) for x_T, then z and the posterior noise at each step, so the
npz is the same for any number of processes and any --batch_size.
"""


import datetime
import math
import os
import re

import torch
import tqdm

from trainkit import checkpoint, dist, ema, npz, run, sampling
from trainkit.errors import UserError
from trainkit.fileio import atomic_path

from . import experiment, script_util

FAMILY = "ddgan_sample"


def create_parser():
    p = run.ArgumentParser(description=__doc__)
    script_util.add_model_args(p, defaults=False)
    a = p.add_argument
    a("--model_path", default="",
      help="run directory, checkpoint file or netG_*.pth (required unless --exp/--epoch_id name one)")
    a("--exp", default=None, help="test_ddgan.py's experiment name: the folder ./saved_info/dd_gan/{dataset}/{exp}/ "
      "(default: none, use --model_path)")
    a("--epoch_id", type=run.NONNEG_INT, default=None,
      help="with --exp: sample netG_{epoch_id}.pth of that folder (test_ddgan.py's default: 1000)")
    a("--weights", default="auto", choices=["auto", "ema", "raw"],
      help="generator weights: auto = the average --model_path names, else the step's recorded sampling "
           "weights (the EMA with --use_ema); ema; or raw")
    a("--num_samples", type=run.POSITIVE_INT, default=50000, help="images to sample in all")
    a("--batch_size", type=run.POSITIVE_INT, default=200, help="sample generating batch size (per process)")
    a("--compute_fid", action="store_true", default=False,
      help="test_ddgan.py's flag: FID of the samples against --real_img_dir")
    a("--real_img_dir", default=None,
      help="with --compute_fid: an image folder, a pytorch-fid statistics .npz or DDGAN's .npy statistics "
           "(default, as test_ddgan.py, by --dataset: pytorch_fid/cifar10_train_stat.npy, celeba_256_stat.npy "
           "or lsun_church_stat.npy; other data sets need it)")
    a("--fid_stats", default="", help="FID statistics (.npz, or DDGAN's .npy) to score the samples against "
      "at the end; the same as --compute_fid --real_img_dir FILE (default: none, no FID)")
    a("--inception_weights", default="", help="local pytorch-fid Inception weights file for offline machines "
      "(default: $TORCH_HOME's copy, downloaded if absent)")
    run.add_run_args(p)
    return p


# test_ddgan.py's statistics by --dataset (it uses --real_img_dir only for other names), and the
# resolution each was computed at; the paths are relative to the working directory, as there
REFERENCE_STATS = {
    "cifar10": os.path.join("pytorch_fid", "cifar10_train_stat.npy"),
    "celeba_256": os.path.join("pytorch_fid", "celeba_256_stat.npy"),
    "lsun": os.path.join("pytorch_fid", "lsun_church_stat.npy"),
}
STATS_RESOLUTION = {"cifar10_train_stat.npy": 32, "celeba_256_stat.npy": 256, "lsun_church_stat.npy": 256}
REFERENCE_REAL = REFERENCE_STATS["cifar10"]  # test_ddgan.py's --real_img_dir default
REFERENCE_EPOCH = 1000  # test_ddgan.py's --epoch_id


def resolve_source(args):
    """--model_path, or the netG file that --exp / --epoch_id name (one-line errors naming them)."""
    if args.exp is None:
        if args.epoch_id is not None:
            raise UserError("--epoch_id needs --exp (the experiment whose netG_{epoch_id}.pth to sample)")
        if not args.model_path:
            raise UserError("give --model_path (a run directory or checkpoint), or --exp NAME --epoch_id N")
        return args.model_path
    if args.model_path:
        raise UserError(f"--model_path {args.model_path} and --exp {args.exp} both name a model: give one")
    dataset = args.dataset or "cifar10"
    folder = experiment.folder(dataset, args.exp)
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such experiment folder (--exp {args.exp}, --dataset {dataset})")
    epoch = REFERENCE_EPOCH if args.epoch_id is None else args.epoch_id
    path = os.path.join(folder, f"netG_{epoch}.pth")
    if not os.path.exists(path):
        have = sorted((int(n[5:-4]) for n in os.listdir(folder) if re.fullmatch(r"netG_\d+\.pth", n)))
        raise UserError(f"{path}: no such file (--epoch_id {epoch}); {folder} has "
                        + (f"epochs {', '.join(map(str, have))}" if have else "no netG_*.pth"))
    return path


def reference_stats(dataset: str) -> str:
    """test_ddgan.py's statistics file for --compute_fid without --real_img_dir."""
    if dataset not in REFERENCE_STATS:
        raise UserError(f"--dataset {dataset}: test_ddgan.py names FID statistics only for "
                        f"{', '.join(REFERENCE_STATS)}; give --real_img_dir (an image folder or statistics file)")
    return REFERENCE_STATS[dataset]


def reference_resolution(ref: str, kind: str):
    """(width, height) of the images a reference holds or was computed from; None when unknown
    (statistics files other than test_ddgan.py's named ones carry no resolution)."""
    if kind == "stats":
        side = STATS_RESOLUTION.get(os.path.basename(ref))
        return None if side is None else (side, side)
    if kind == "samples":
        images, _ = npz.read_samples(ref)
        return images.shape[2], images.shape[1]
    from PIL import Image

    from evaluations import fid

    files = fid.list_images(ref)
    if not files:
        return None  # evaluations.fid says so, by name, when it reads the folder
    try:
        with Image.open(files[0]) as im:
            return im.size
    except Exception as e:  # PIL raises many types for a bad file
        raise UserError(f"{files[0]}: cannot read image ({e})") from None


def fid_reference(args, dataset="cifar10", image_size=None):
    """The file or folder to score against, or None; checked before any sampling: it must exist
    and hold (or be named as computed from) images of --image_size."""
    if args.fid_stats and (args.compute_fid or args.real_img_dir):
        raise UserError("--fid_stats and --compute_fid/--real_img_dir both ask for FID: give one")
    if args.real_img_dir and not args.compute_fid:
        raise UserError("--real_img_dir is used only with --compute_fid")
    ref = args.fid_stats or ((args.real_img_dir or reference_stats(dataset)) if args.compute_fid else None)
    if ref is None:
        return None, None
    from evaluations import fid  # only when asked: sampling itself needs no Inception network

    if not os.path.exists(ref) and ref == REFERENCE_STATS.get(dataset) and not args.real_img_dir:
        raise UserError(f"{ref}: no such file (test_ddgan.py's FID statistics for --dataset {dataset}); "
                        "put it there or give --real_img_dir")
    kind = fid.input_kind(ref)
    if args.fid_stats and kind != "stats":
        raise UserError(f"{ref}: not FID statistics (needs keys mu and sigma); for an image folder use "
                        "--compute_fid --real_img_dir")
    size = reference_resolution(ref, kind)
    if image_size is not None and size is not None and size != (image_size, image_size):
        raise UserError(f"{ref}: reference of {size[0]}x{size[1]} images, but --image_size is {image_size}")
    return ref, (len(npz.read_stats(ref)[0]) if kind == "stats" else 2048)


def reference_outputs_wanted(args) -> bool:
    """test_ddgan.py's image outputs: with its flags, when no run directory was asked for."""
    return (args.exp is not None or args.compute_fid) and not (args.logdir or os.environ.get("OPENAI_LOGDIR"))


def _fresh(path: str) -> str:
    """`path` itself when it is free (an empty folder counts as free), else `path-<time>`."""
    if not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path)):
        return path
    root, ext = os.path.splitext(path) if not os.path.isdir(path) else (path, "")
    return f"{root}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}{ext}"


def write_reference_images(npz_path, dataset, batch_size, folder_of_images, logger):
    """test_ddgan.py's files from the npz: one jpg per sample, or one grid of the first batch."""
    from PIL import Image
    from torchvision.utils import save_image

    images, _ = npz.read_samples(npz_path)
    if folder_of_images:
        out = _fresh(os.path.join("generated_samples", dataset))
        os.makedirs(out, exist_ok=True)
        for i, img in enumerate(tqdm.tqdm(images, desc="jpg", disable=len(images) < 500)):
            with atomic_path(os.path.join(out, f"{i}.jpg")) as tmp:
                Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp, format="JPEG")
    else:
        out = _fresh(f"samples_{dataset}.jpg")
        batch = torch.from_numpy(images[:batch_size]).permute(0, 3, 1, 2).float() / 255
        with atomic_path(out) as tmp:
            save_image(batch, tmp, nrow=int(math.ceil(math.sqrt(len(batch)))), format="JPEG")
    logger.log(f"wrote {out} (test_ddgan.py's layout)")
    return out


def _model_defaults():
    """The reference's model flags with their defaults."""
    return vars(script_util.add_model_args(run.ArgumentParser()).parse_args([]))


def model_options(args):
    """Reference defaults < the run's options.json < flags given on the command line."""
    defaults = _model_defaults()
    path = args.model_path.rstrip("/")  # main_sample has resolved --exp / --epoch_id into it
    saved = {k: v for k, v in run.load_options(path, missing_ok=True).items() if k in defaults}
    given = {k: v for k, v in vars(args).items() if k in defaults and v is not None}
    return {**defaults, **saved, **given}


AVERAGE_PREFIXES = ("ema_", "phema_")  # every average trainkit writes: ema_<rate>_, ema_kimg.._, phema_.._


def named_weights(model_path):
    """The prefix of the generator weights file `model_path` names when it names one (an
    ema_0.9999_000100.pt, ema_kimg..., phema_..., ema_posthoc... file; "model" for
    model000100.pt), else None (a run directory, a released netG_*.pth, a step's other files)."""
    parsed = checkpoint.parse_filename(str(model_path).rstrip("/"))
    if parsed is None or os.path.isdir(str(model_path)):
        return None
    prefix = parsed[0]
    return prefix if prefix == "model" or prefix.startswith(AVERAGE_PREFIXES) else None


def pick_weights(ck, choice, ema_decay=None, named=None):
    """(prefix, path) of the generator weights to use.

    `named`: the file --model_path names (named_weights). An average named so is sampled as it
    is (with auto or ema): naming ema_0.99_000100.pt means that file, not the step's default.
    A named model file, a run directory or a released file stand for their step: auto takes
    trainkit.checkpoint.sampling_weights (the weights the training loop recorded, else the
    settled EMA, else the raw model), the one rule every sampler, interpolation and export use;
    raw the model; ema an average when there is one (the recorded or settled one, else the
    --ema_decay one the run trained with, else the longest-rate EMA), else one line saying so."""
    if choice == "raw":
        return "model", ck.path("model")
    if named is not None and named != "model":
        return named, ck.path(named)
    chosen = checkpoint.sampling_weights(ck)
    if choice == "auto" or chosen != "model":
        return chosen, ck.path(chosen)
    rates = ema.rates_in(ck.prefixes())
    if not rates:
        raise UserError(f"{ck.dir}: step {ck.step} has no EMA weights (trained without --use_ema); "
                        "use --weights raw")
    rate = float(ema_decay) if ema_decay is not None and float(ema_decay) in rates else max(rates)
    return rates[rate], ck.path(rates[rate])


def load_generator(args, o, device):
    """(generator in eval mode on `device`, its weights file) for --model_path and --weights."""
    ck = checkpoint.resolve(args.model_path)
    trained = run.load_options(args.model_path.rstrip("/"), missing_ok=True)  # the run's --ema_decay
    prefix, path = pick_weights(ck, args.weights, trained.get("ema_decay"), named_weights(args.model_path))
    generator = script_util.build_generator(o)
    misfits = checkpoint.saved_flag_contradictions(args.model_path, vars(args), _model_defaults())
    script_util.load_weights(generator, checkpoint.load(path), path, contradictions=misfits)
    return generator.to(device).eval(), path


@torch.no_grad()
def draw(generator, diffusion, rnd, shape, nz):
    """(uint8 N,H,W,C, None): the generator's T-step posterior chain for the samples of `rnd` (a
    trainkit.sampling.PerSampleRandom on the generator's device). Each sample's own generator
    draws x_T (`shape` = C,H,W) first, then at every step z (`nz`) and the posterior noise, the
    order ddgan.interpolate's seed_draws replays. The one draw of the family: this sampler and
    the training probe (ddgan.task.Task.probe_images) both call it, so their noise is the same
    for the same seed."""
    x = diffusion.sample(generator, rnd.randn(*shape), nz, randn=rnd.randn)
    return npz.to_uint8(x), None


SAMPLER = "ddgan_posterior"  # the T-step chain x_T -> G -> q(x_t | x_{t+1}, x_0) -> ... -> x_0


def sample_info(args, diffusion, path):
    """What the samples json beside the npz says (trainkit.npz's C4 fields and DDGAN's extras):
    the generator runs once per step of the chain, so num_timesteps network evaluations."""
    return {"sampler": SAMPLER, "network_evaluations": int(diffusion.num_timesteps),
            "num_samples": int(args.num_samples), "seed": int(args.seed),
            "num_timesteps": int(diffusion.num_timesteps), "weights": os.path.basename(path)}


@torch.no_grad()
def main_sample(args):
    args.model_path = resolve_source(args)
    checkpoint.resolve(args.model_path)  # a missing path is the first thing to report
    o = model_options(args)
    reference, fid_dims = fid_reference(args, o["dataset"], o["image_size"])  # a bad one fails before sampling
    script_util.check_model_options(o)
    reference_images = reference_outputs_wanted(args)
    r = run.setup(FAMILY, args)  # a --logdir holding a run (the training one, say): a fresh subfolder
    device = dist.device()
    generator, path = load_generator(args, o, device)
    diffusion = script_util.build_diffusion(o)
    r.logger.log(f"sampling {args.num_samples} images from {path} "
                 f"({diffusion.num_timesteps} steps) on {dist.world_size()} process(es)")
    shape = (o["num_channels"], o["image_size"], o["image_size"])

    def sample_fn(rnd, indices):
        return draw(generator, diffusion, rnd, shape, o["nz"])

    out = sampling.sample_to_npz(sample_fn, args.num_samples, args.batch_size, args.seed, r.dir,
                                 device=device, info=sample_info(args, diffusion, path))
    r.logger.log(f"wrote {out}")
    if reference_images and dist.is_main():
        with dist.rank_zero_only("ddgan.sample: reference images"):
            write_reference_images(out, o["dataset"], args.batch_size, args.compute_fid, r.logger)
    if reference is not None:
        from evaluations import fid

        value = fid.fid_of_paths(out, reference, dims=fid_dims, weights=args.inception_weights or None)
        r.logger.logkv("fid", value)
        r.logger.logkv("fid_dims", fid_dims)
        r.logger.dumpkvs()
        r.logger.log(f"FID: {value:.6f} against {reference}")
        if dist.is_main():
            with dist.rank_zero_only("ddgan.sample: FID line"):
                print(f"FID = {value}", flush=True)  # test_ddgan.py's line
    r.logger.close()
    return out


@run.main
def main():
    main_sample(create_parser().parse_args())


if __name__ == "__main__":
    main()
