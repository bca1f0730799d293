"""What improved_diffusion.interpolate and improved_diffusion.edit share: the ODE sampler flags,
batch-invariant decoding in chunks, the x_T of a seed, slerp, and the PNG grid + npz they write."""

import numpy as np
import torch

from trainkit import data, run, sampling
from trainkit.errors import UserError
from trainkit.interpolation import interpolation_row, lerp, output_paths, slerp, write_grid_and_npz  # noqa: F401 (re-export)

from . import samplers
from .cli import resolve_model_file
from .draw import SAMPLE_BLOCK, InBlocks
from .guidance import check_guidance, guided
from .sample import GUIDANCE_HELP, batch_invariant_block


def control_defaults(**extra):
    """openai-style defaults (build_parser turns each into a typed flag) shared by the control
    entry points; `extra` adds an entry point's own."""
    defaults = dict(
        model_path="",
        clip_denoised=True,
        batch_size=16,  # images per decode call (chunks); the grid does not depend on it
        precision="fp32",
        batch_invariant=True,  # CPU: fixed blocks of 8 rows per model call, as improved_diffusion.sample
        out="",
        class_label=0,
        guidance_scale=1.0,
    )
    defaults.update(extra)
    return defaults


CONTROL_HELP = dict(
    batch_size="images per decode call (the grid does not depend on it)",
    batch_invariant="on the CPU, call the model on fixed blocks of 8 rows as improved_diffusion.sample does, so "
                    "that an image is the same as that command's; False: whole batches (faster)",
    out="PNG path of the grid (default <logdir>/<entry point>.png); the npz goes beside it; must not exist",
    class_label="class-conditional model: the label of every image (-1, edit only: each input image's own label)",
    seeds="comma list of at least two seeds; seed s stands for the x_T of improved_diffusion.sample --seed s",
    num_steps="images per row, both ends included (>= 2)",
    from_images="interpolate between these images instead of seeds (a samples .npz or an image folder; "
                "DDIM-inverted to their x_T); empty: between --seeds",
    pairs="with --from_images: comma list of at least two image indices to interpolate between",
    num_images="edit the first N images of --images",
    t0="comma list of fractions in (0, 1] of the process to noise to; each gives one row (1: almost pure noise)",
)
CONTROL_HELP["guidance_scale"] = GUIDANCE_HELP + "; the inversion of --from_images is guided alike"
CONTROL_TYPES = dict(class_label=run.int_range(-1), num_steps=run.int_range(2), num_images=run.POSITIVE_INT,
                     guidance_scale=run.NONNEG_FLOAT)


def add_sampler_args(parser):
    parser.add_argument("--sampler", default="ddim", choices=samplers.ODE_SAMPLERS,
                        help="deterministic sampler that decodes: ddim (eta 0), dpmpp_2m or heun")
    parser.add_argument("--steps", type=run.POSITIVE_INT, default=50, help="sampler steps of a whole decode")
    parser.add_argument("--time_schedule", default="uniform", choices=samplers.TIME_SCHEDULES,
                        help="where the steps lie: uniform in t, uniform in log-SNR, or EDM's karras sigmas")
    return parser


def check_args(args, allow_input_labels=False):
    """One-line refusals shared by the control entry points (before anything is written).
    allow_input_labels: --class_label -1 (the input images' own labels) is accepted."""
    resolve_model_file(args.model_path)  # a missing model is the first thing to report
    check_guidance(args)
    if args.timestep_respacing:
        raise UserError("--timestep_respacing: the ODE samplers place --steps over the model's own timesteps; "
                        "give --steps N instead")
    lowest = -1 if allow_input_labels else 0
    if args.class_cond and not lowest <= args.class_label < args.num_classes:
        raise UserError(f"--class_label {args.class_label}: outside the model's classes 0..{args.num_classes - 1}")
    if not args.class_cond and args.class_label not in (0, -1):
        raise UserError(f"--class_label {args.class_label}: the model is not class-conditional")


def refuse_existing_out(out):
    """Before run.setup: an --out given explicitly (or its npz) that exists is an error."""
    if out:
        output_paths(out, "", "")


def seed_x_T(seed, shape):
    """x_T (C, H, W) of sample index 0 of `improved_diffusion.sample --seed SEED`, with a fixed
    label (--class_labels) or an unconditional model: the first draw of the sample's generator."""
    return sampling.PerSampleRandom(seed, [0]).randn(*shape)[0]


def pinned_indices(n, pinned, block=SAMPLE_BLOCK):
    """Distinct sample indices for n images such that image k of `pinned` has index = 0 mod block:
    under InBlocks it is computed in row 0 of a `block`-row call, exactly as
    improved_diffusion.sample computes sample 0 on the CPU (bitwise the same image). The others
    fill the remaining rows."""
    pinned = sorted(set(pinned))
    index = {k: j * block for j, k in enumerate(pinned)}
    free = (i for i in range(len(pinned) * block + n) if i % block or i // block >= len(pinned))
    for k in range(n):
        if k not in index:
            index[k] = next(free)
    return [index[k] for k in range(n)]


def in_chunks(fn, x, labels, args, indices=None):
    """fn(net_indices, rows, x[rows], model_kwargs) over chunks of args.batch_size rows; the
    outputs concatenated. net_indices (by `indices`, default 0..n-1) are for InBlocks on the CPU,
    so that an image does not depend on the others, and None where the batch is kept."""
    block = batch_invariant_block(args)
    indices = list(range(len(x))) if indices is None else indices
    outs = []
    for start in range(0, len(x), args.batch_size):
        rows = slice(start, start + args.batch_size)
        kwargs = {"y": labels[rows]} if labels is not None else {}
        outs.append(fn(indices[rows] if block else None, rows, x[rows], kwargs))
    return torch.cat(outs)


class Decoder:
    """The model, its diffusion and the sampler flags (--sampler, --steps, --time_schedule,
    --clip_denoised, --precision): decode, invert and SDEdit batches of images in [-1, 1]."""

    def __init__(self, model, diffusion, args, prec):
        # guided inside InBlocks, as improved_diffusion.sample: the same images bit for bit
        self.model = guided(model, getattr(args, "guidance_scale", 1.0))
        self.diffusion, self.args, self.prec = diffusion, args, prec
        self.block = batch_invariant_block(args)

    def _net(self, indices):
        return InBlocks(self.model, indices, self.block) if indices is not None else self.model

    def _flags(self):
        a = self.args
        return dict(time_schedule=a.time_schedule, clip_denoised=a.clip_denoised)

    def decode(self, x_T, labels=None, indices=None):
        """The sampler from x_T (N, C, H, W); `indices` place images in InBlocks (pinned_indices)."""
        a = self.args

        def fn(idx, rows, x, kwargs):
            with self.prec.autocast():
                return samplers.sample_loop(self._net(idx), self.diffusion, x, sampler=a.sampler, steps=a.steps,
                                            model_kwargs=kwargs, **self._flags()).float()
        return in_chunks(fn, x_T, labels, a, indices)

    def invert(self, x0, labels=None):
        """DDIM inversion of images x0 to x_T over the decode's --steps and --time_schedule."""
        a = self.args

        def fn(idx, rows, x, kwargs):
            with self.prec.autocast():
                return samplers.invert(self._net(idx), self.diffusion, x, a.steps, model_kwargs=kwargs,
                                       **self._flags()).float()
        return in_chunks(fn, x0, labels, a)

    def sdedit(self, x0, eps, t0, labels=None):
        """SDEdit of images x0 from fraction t0 with the noise `eps` (one per image)."""
        a = self.args

        def fn(idx, rows, x, kwargs):
            with self.prec.autocast():
                return samplers.sdedit(self._net(idx), self.diffusion, x, eps[rows], t0, sampler=a.sampler,
                                       steps=a.steps, model_kwargs=kwargs, **self._flags()).float()
        return in_chunks(fn, x0, labels, a)


class InputImages:
    """The images of a samples npz or an image folder, as training reads them (resized and
    converted to `image_size` and `channels`). A folder's images are decoded only when taken, so
    editing a few images of a large folder does not decode it all; its labels are the file-name
    classes over the whole folder, as training numbers them."""

    def __init__(self, path, image_size, channels, want_labels=False):
        self.path, self.image_size, self.channels = str(path), image_size, channels
        self.dataset = self.files = None
        if self.path.endswith(".npz"):
            self.dataset = data.load_dataset(self.path, image_size, class_cond=want_labels, channels=channels)
            self.count = len(self.dataset)
        else:
            self.files = data.list_image_files(self.path)
            if not self.files:
                raise UserError(f"{self.path}: no images (.jpg, .jpeg, .png, .gif) in this folder")
            self.labels = torch.from_numpy(data.class_index(self.files)[0]) if want_labels else None
            self.count = len(self.files)

    def __len__(self):
        return self.count

    def take(self, indices):
        """(uint8 N,C,H,W images, int64 labels or None) of the images at `indices`."""
        indices = list(indices)
        if self.dataset is not None:
            labels = self.dataset.labels
            return self.dataset.images[indices], (None if labels is None else labels[indices])
        images = np.stack([data.load_image(self.files[i], self.image_size, self.channels) for i in indices])
        return (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                None if self.labels is None else self.labels[indices])


def to_model_input(images_nchw_uint8, device):
    """uint8 N,C,H,W -> float in [-1, 1] on `device`, as training reads images."""
    return images_nchw_uint8.float().div(127.5).sub(1.0).to(device)


def label_tensor(args, n, device):
    """The --class_label of n images for a class-conditional model, else None."""
    if not args.class_cond:
        return None
    return torch.full((n,), max(args.class_label, 0), dtype=torch.long, device=device)

