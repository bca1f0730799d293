"""Sample a trained model into an npz: `python -m improved_diffusion.sample --model_path PATH`.

Accepts every flag of openai's scripts/image_sample.py with the same defaults. Extensions:
--model_path may be a training run directory (its newest checkpoint's weights named by
trainkit.checkpoint.sampling_weights: the ones the training loop recorded, else the settled EMA;
model flags are then read from the run's options.json unless given), --seed,
--logdir, --ddim_eta, --class_labels, --precision, and the fast samplers of samplers.py:
--sampler ddpm|ddim|dpmpp_2m|dpmpp_2m_sde|heun, --steps N, --time_schedule uniform|logsnr|karras (see
`resolve_sampler`), and --guidance_scale W (classifier-free guidance of a model trained with
--class_dropout_prob > 0: guidance.py). Each sample index owns a generator seeded from (--seed, index) that draws
its label, x_T and every step's noise, so the npz does not depend on --batch_size or the number
of ranks: draw.draw, which the training probe calls too. samples_<shape>.json beside the npz
says what was done (sample_info).
"""

import torch

from trainkit import checkpoint, dist, precision, run, sampling
from trainkit.errors import UserError

from . import samplers
from .cli import (
    apply_saved_model_flags,
    argv,
    build_parser,
    checkpoint_contradictions,
    create_model_and_diffusion_checked,
    resolve_model_file,
    saved_options,
)
from .draw import SAMPLE_BLOCK, InBlocks, draw, invariant_block  # noqa: F401 (re-export)
from .guidance import check_guidance
from .respace import space_timesteps

GUIDANCE_HELP = ("classifier-free guidance (Ho & Salimans 2022) of a model trained with --class_dropout_prob > 0: "
                 "uncond + w (cond - uncond), k-diffusion's cond_scale; 1 (default): the conditional model, no "
                 "guidance; 0: the unconditional model; > 1: guided (ours)")


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
        batch_invariant=True,  # CPU: fixed blocks of 8 rows per model call (InBlocks): the npz ignores batch/ranks
    )
    helps = dict(
        num_samples="images written to the npz",
        batch_size="images per rank per sampling batch (the npz does not depend on it)",
        use_ddim="sample with DDIM (eta --ddim_eta) instead of the ancestral sampler; = --sampler ddim",
        ddim_eta="DDIM's noise: 0 deterministic, 1 as much noise as the ancestral sampler (ours: openai fixes 0)",
        class_labels="class-conditional model: comma list of labels, repeated over the samples; empty: a random "
                     "label per sample (ours)",
        batch_invariant="on the CPU, call the model on fixed blocks of 8 rows, so that the npz is the same for any "
                        "--batch_size or number of ranks; False: whole batches (faster) (ours)",
    )
    defaults["guidance_scale"] = 1.0
    helps["guidance_scale"] = GUIDANCE_HELP
    parser = build_parser("Sample an improved-diffusion model into samples_NxHxWxC.npz.", defaults, helps=helps,
                          types=dict(ddim_eta=run.NONNEG_FLOAT, guidance_scale=run.NONNEG_FLOAT))
    parser.add_argument(
        "--sampler", default="", choices=("",) + samplers.SAMPLERS,
        help="ddpm: ancestral (openai's); ddim: eta=0 DDIM; dpmpp_2m: DPM-Solver++(2M); dpmpp_2m_sde: "
             "SDE-DPM-Solver++(2M) (stochastic, fresh noise each step); heun: EDM's 2nd-order Heun (2N-1 model "
             "calls). Default: ddpm, or ddim with --use_ddim True. dpmpp_2m, dpmpp_2m_sde and heun need --steps "
             "and refuse --timestep_respacing (they place their own steps over the model's timesteps)")
    parser.add_argument(
        "--steps", type=run.NONNEG_INT, default=0,
        help="number of sampling steps. ddim, dpmpp_2m, dpmpp_2m_sde, heun: N steps at --time_schedule points of "
             "the model's timesteps (fractional ones interpolated in log-SNR); ddpm: the same as "
             "--timestep_respacing N. 0 (default): the process of --timestep_respacing (all timesteps if empty), "
             "as openai. Not with --timestep_respacing")
    parser.add_argument(
        "--time_schedule", default="uniform", choices=samplers.TIME_SCHEDULES,
        help="where --steps puts the steps of ddim, dpmpp_2m, dpmpp_2m_sde and heun: uniform in t, uniform in "
             "log-SNR (logsnr), or EDM's karras sigmas (rho 7); default uniform")
    return parser


def resolve_sampler(args):
    """Settle the sampler flags against openai's --use_ddim and --timestep_respacing, in place.

    Without --steps, ddpm and ddim run openai's loops over the (respaced) process exactly as
    before. --steps N: ddim, dpmpp_2m, dpmpp_2m_sde and heun step over the model's own timesteps
    (samplers.sample_loop); ddpm takes --timestep_respacing N. After this args.sampler is the
    sampler's name and args.steps its number of steps. Returns True for samplers.sample_loop,
    False for openai's loops. Contradictory flags are one-line UserErrors.
    """
    sampler = args.sampler or ("ddim" if args.use_ddim else "ddpm")
    if args.use_ddim and sampler != "ddim":
        raise UserError(f"--use_ddim True means --sampler ddim, not {sampler}: give one of them")
    if args.steps < 0:
        raise UserError(f"--steps {args.steps}: must be positive (or 0, the process's own timesteps)")
    if args.steps and args.timestep_respacing:
        raise UserError("--steps and --timestep_respacing both choose the steps: give one of them")
    if sampler in samplers.STEP_SAMPLERS and sampler != "ddim" and not args.steps:  # ddim has openai's loop
        if args.timestep_respacing:
            raise UserError(f"--sampler {sampler} places its steps over the model's own timesteps: give --steps N, "
                            "not --timestep_respacing")
        raise UserError(f"--sampler {sampler} needs --steps N")
    if args.time_schedule != "uniform" and (not args.steps or sampler == "ddpm"):
        raise UserError(f"--time_schedule {args.time_schedule} needs --steps N and --sampler "
                        f"{', '.join(samplers.STEP_SAMPLERS)}")
    if args.steps and sampler == "ddim" and args.ddim_eta != 0:
        raise UserError("--ddim_eta with --steps: --steps runs the deterministic (eta 0) ODE; for eta > 0 use "
                        "--use_ddim True --timestep_respacing N")
    if args.steps == 1 and sampler == "ddpm":
        raise UserError("--sampler ddpm --steps 1: the ancestral sampler needs at least 2 steps")
    args.sampler = sampler
    if args.steps and sampler == "ddpm":
        args.timestep_respacing = str(args.steps)
    if args.steps and sampler != "ddpm":
        return True
    try:
        args.steps = len(space_timesteps(args.diffusion_steps, args.timestep_respacing or [args.diffusion_steps]))
    except ValueError as e:
        raise UserError(f"--timestep_respacing {args.timestep_respacing!r}: {e}") from None
    return False


def parse_labels(text, num_classes):
    try:
        labels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--class_labels {text!r}: expected comma-separated integers") from None
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise UserError(f"--class_labels: {bad[0]} is outside 0..{num_classes - 1}")
    return labels


def load_weights(args, log):
    """(model in eval mode, diffusion, the weights file) of args.model_path: a .pt state dict, or
    a run directory's newest checkpoint with trainkit.checkpoint.sampling_weights' choice."""
    path = resolve_model_file(args.model_path)
    model, diffusion = create_model_and_diffusion_checked(args)
    state_dict = checkpoint.load(path)
    contradictions = checkpoint_contradictions(args, state_dict)
    checkpoint.load_into(model, state_dict, path, hint="check the model flags", contradictions=contradictions)
    for line in contradictions:  # the weights fit (a diffusion flag, say): sampled as asked, said once
        log.log(f"note: {line}")
    log.log(f"loaded {path}")
    return model.to(dist.device()).eval(), diffusion, path


def load_model(args, log):
    """The model of args.model_path (see load_weights) in eval mode, and its diffusion."""
    model, diffusion, _ = load_weights(args, log)
    return model, diffusion


def batch_invariant_block(args) -> int:
    """Rows per model call with --batch_invariant on the CPU; 0 where the batch is kept."""
    return invariant_block(args.batch_invariant)


def make_sample_fn(model, diffusion, args, prec, ode=False):
    """sample_fn for sampling.sample_to_npz: draw.draw with the sampler flags; `ode`
    (resolve_sampler's answer): samplers.sample_loop with args.sampler, args.steps and
    args.time_schedule, else openai's loop over the (respaced) process."""
    block = batch_invariant_block(args)
    labels = parse_labels(args.class_labels, args.num_classes) if args.class_labels else None
    shape = (args.image_channels, args.image_size, args.image_size)

    def sample_fn(rnd, indices):
        return draw(model, diffusion, rnd, shape, sampler=args.sampler, steps=args.steps if ode else None,
                    time_schedule=args.time_schedule, eta=args.ddim_eta, clip_denoised=args.clip_denoised,
                    guidance_scale=args.guidance_scale, num_classes=args.num_classes if args.class_cond else None,
                    labels=labels, block=block, prec=prec)

    return sample_fn


def sample_info(args, weights, ode):
    """What the samples json beside the npz says (trainkit.npz's C4 layout): the sampler, its
    network evaluations per image (samplers.nfe; a guided evaluation is one forward of twice the
    rows, counted once), the count and seed; and ours: steps, time schedule or DDIM's eta,
    guidance scale, and the weights file sampled."""
    info = {"sampler": args.sampler, "network_evaluations": samplers.nfe(args.sampler, args.steps),
            "num_samples": args.num_samples, "seed": args.seed, "steps": args.steps}
    if ode:
        info["time_schedule"] = args.time_schedule
    elif args.sampler == "ddim":
        info["eta"] = args.ddim_eta
    info.update(guidance_scale=args.guidance_scale, weights=str(weights))
    return info


@run.main
def main():
    args = create_argparser().parse_args()
    if args.model_path:
        apply_saved_model_flags(args, saved_options(args.model_path), argv())
    check_guidance(args)
    ode = resolve_sampler(args)  # before run.setup: options.json records the resolved sampler and steps
    nfe = samplers.nfe(args.sampler, args.steps)
    r = run.setup("improved_diffusion", args)
    model, diffusion, weights = load_weights(args, r.logger)
    prec = precision.Precision(args.precision, dist.device())
    how = (f"{args.time_schedule} time schedule" if ode
           else f"DDIM eta={args.ddim_eta:g}" if args.sampler == "ddim" else "ancestral")
    if args.guidance_scale != 1.0:  # each evaluation is one call on twice the rows
        how += f", classifier-free guidance scale {args.guidance_scale:g}"
    r.logger.log(f"sampling {args.num_samples} images: sampler {args.sampler}, {args.steps} steps ({how}), "
                 f"{nfe} model evaluations per image...")
    r.logger.logkvs({"sampler": args.sampler, "steps": args.steps, "time_schedule": args.time_schedule if ode else "",
                     "nfe": nfe, "num_samples": args.num_samples})
    r.logger.dumpkvs()
    with torch.no_grad():
        path = sampling.sample_to_npz(make_sample_fn(model, diffusion, args, prec, ode=ode), args.num_samples,
                                      args.batch_size, args.seed, r.dir, block=batch_invariant_block(args) or 1,
                                      info=sample_info(args, weights, ode))
    r.logger.log(f"saved {path}")
    r.logger.log("sampling complete")
    r.logger.close()


if __name__ == "__main__":
    main()
