"""openai/improved-diffusion's configuration API: the same names, defaults and flags.

`model_and_diffusion_defaults()` is exactly openai's dict, so their flag files and
`create_model_and_diffusion(**defaults)` calls work unchanged. Our extensions live apart
in `model_extension_defaults()` and default to openai's behaviour: `channel_mult` (needed
for image sizes other than 32/64/256, e.g. tiny test models), `num_classes` (1000, the
label embedding size of class-conditional models), `image_channels` (3; 1 trains grayscale
data as it is, where openai's loader converts every image to RGB), `class_dropout_prob`
(classifier-free guidance's null class, an extra label row only when > 0), `predict_v` and
`snr_gamma` (v-prediction and min-SNR-gamma weighting; 0 / False: openai's loss).
"""

import argparse
import inspect

from trainkit import run
from trainkit.run import str2bool  # openai's public name, kept importable from here

from . import gaussian_diffusion as gd
from .respace import SpacedDiffusion, space_timesteps
from .unet import SuperResModel, UNetModel

NUM_CLASSES = 1000

# Channel multipliers by image size, as in the released models.
_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}


def model_and_diffusion_defaults():
    """Defaults for image training (openai's, key for key)."""
    return dict(
        image_size=64,
        num_channels=128,
        num_res_blocks=2,
        num_heads=4,
        num_heads_upsample=-1,
        attention_resolutions="16,8",
        dropout=0.0,
        learn_sigma=False,
        sigma_small=False,
        class_cond=False,
        diffusion_steps=1000,
        noise_schedule="linear",
        timestep_respacing="",
        use_kl=False,
        predict_xstart=False,
        rescale_timesteps=True,
        rescale_learned_sigmas=True,
        use_checkpoint=False,
        use_scale_shift_norm=True,
    )


def model_extension_defaults():
    """Model flags that openai does not have; the defaults reproduce openai's models.
    class_dropout_prob, predict_v and snr_gamma are recorded in options.json with the others, so
    a sampler rebuilds the network (the null class) and the parameterisation from it."""
    return dict(channel_mult="", num_classes=NUM_CLASSES, image_channels=3, class_dropout_prob=0.0,
                predict_v=False, snr_gamma=0.0)


def one_of(*options):
    """An argparse type accepting only `options` (strings); a wrong value is refused at parse
    time as `argument --flag: 'VALUE' is not one of A, B`."""
    def parse(text):
        if text not in options:
            shown = ", ".join(repr(o) if o == "" else o for o in options)
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {shown}")
        return text

    parse.__name__ = "choice"
    return parse


def _int_one_of(*values):
    def parse(text):
        value = run.int_range()(text)
        if value not in values:
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {' or '.join(map(str, values))}")
        return value

    parse.__name__ = "int"
    return parse


def _heads_upsample(text):
    value = run.int_range()(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"{text} is out of range: must be -1 (the same as --num_heads) or >= 1")
    return value


# What each model/diffusion flag changes. The flags, their names and defaults are openai's;
# "(ours)" marks a meaning openai does not have.
MODEL_FLAG_HELP = dict(
    image_size="image height and width in pixels; 32, 64 and 256 pick openai's channel multipliers, other sizes "
               "need --channel_mult",
    num_channels="base channels of the UNet (openai's model_channels); level i has num_channels x channel_mult[i]",
    num_res_blocks="residual blocks per UNet resolution level",
    num_heads="attention heads of the attention layers on the way down and in the middle block",
    num_heads_upsample="attention heads on the way up; -1: the same as --num_heads",
    attention_resolutions="comma list of feature-map sizes in pixels that get self-attention, e.g. 16,8; none: no "
                          "attention (ours: openai has no 'none')",
    dropout="dropout probability inside the residual blocks, in [0, 1)",
    learn_sigma="the model also outputs the variance (2x the image channels; an interpolation between beta_t and "
                "the posterior variance); False: a fixed variance",
    sigma_small="with a fixed variance: the posterior variance (True) instead of beta_t (False)",
    class_cond="class-conditional model: a label embedding of --num_classes entries; data labels from file names "
               "(the text before the first '_') or the npz's arr_1",
    diffusion_steps="timesteps T of the diffusion process the model is trained on",
    noise_schedule="beta schedule: linear (openai's 1e-4..0.02, scaled by 1000/T) or cosine (s = 0.008)",
    timestep_respacing="sample on fewer timesteps: N, ddimN, or a comma list of counts per equal section of the "
                       "process; empty: all T (ignored by training)",
    use_kl="train on the variational bound alone (rescaled KL) instead of the noise MSE",
    predict_xstart="the model predicts x_0 instead of the noise eps",
    rescale_timesteps="the model is fed t x 1000 / T, so its time embedding spans 0..1000 whatever T",
    rescale_learned_sigmas="the hybrid loss of a learn_sigma model weights its bound term by T/1000 (openai's "
                           "RESCALED_MSE); False: plain MSE + bound",
    use_checkpoint="gradient checkpointing in the UNet blocks: less memory, more compute per step",
    use_scale_shift_norm="the time (and label) embedding scales and shifts the GroupNorm output (FiLM); False: it is "
                         "added to the features",
    channel_mult="comma list of channel multipliers, one per UNet level, e.g. 1,2,2; empty: openai's for "
                 "--image_size (ours)",
    num_classes="label-embedding size of a class-conditional model; labels must lie in 0..N-1 (ours: openai fixes "
                "1000)",
    image_channels="1: grayscale data trained as it is; 3: RGB (ours: openai converts every image to RGB)",
    class_dropout_prob="classifier-free guidance (Ho & Salimans 2022): replace the training label by a null class "
                       "with this probability (the paper: 0.1-0.2); > 0 adds the null class as a last row of the "
                       "label embedding; 0: openai's layout, no guidance (ours)",
    predict_v="the model predicts v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022) instead of eps; not with "
              "--predict_xstart (ours)",
    snr_gamma="min-SNR-gamma loss weighting (Hang et al. 2023; the paper: 5): the MSE of timestep t weighted by "
              "min(SNR_t, gamma)/SNR_t (eps), /(SNR_t + 1) (v) or min(SNR_t, gamma) (x_0); 0: uniform, openai's (ours)",
    large_size="super-resolution model: the size it outputs (64 or 256)",
    small_size="super-resolution model: the size of the low-resolution image it is conditioned on",
)

# Parse-time types of the model/diffusion flags (openai's values all pass).
MODEL_FLAG_TYPES = dict(
    image_size=run.POSITIVE_INT,
    num_channels=run.POSITIVE_INT,
    num_res_blocks=run.POSITIVE_INT,
    num_heads=run.POSITIVE_INT,
    num_heads_upsample=_heads_upsample,
    dropout=run.float_range(0, 1, hi_open=True),
    diffusion_steps=run.POSITIVE_INT,
    noise_schedule=one_of("linear", "cosine"),
    num_classes=run.POSITIVE_INT,
    image_channels=_int_one_of(1, 3),
    large_size=run.POSITIVE_INT,
    small_size=run.POSITIVE_INT,
    class_dropout_prob=run.float_range(0, 1, hi_open=True),
    snr_gamma=run.NONNEG_FLOAT,
)


def parse_channel_mult(channel_mult, image_size):
    """"1,2,2" -> (1, 2, 2); empty picks openai's multipliers for the image size."""
    if channel_mult:
        try:
            mult = tuple(int(x) for x in str(channel_mult).split(","))
        except ValueError:
            raise ValueError(f"--channel_mult {channel_mult!r}: expected comma-separated integers") from None
        if not mult or min(mult) < 1:
            raise ValueError(f"--channel_mult {channel_mult!r}: multipliers must be positive")
        return mult
    if image_size not in _CHANNEL_MULT:
        raise ValueError(f"unsupported image size: {image_size} (32, 64 or 256, or give --channel_mult)")
    return _CHANNEL_MULT[image_size]


def create_model_and_diffusion(image_size, class_cond, learn_sigma, sigma_small, num_channels, num_res_blocks,
                               num_heads, num_heads_upsample, attention_resolutions, dropout, diffusion_steps,
                               noise_schedule, timestep_respacing, use_kl, predict_xstart, rescale_timesteps,
                               rescale_learned_sigmas, use_checkpoint, use_scale_shift_norm, channel_mult="",
                               num_classes=NUM_CLASSES, image_channels=3, class_dropout_prob=0.0, predict_v=False,
                               snr_gamma=0.0):
    model = create_model(image_size, num_channels, num_res_blocks, learn_sigma=learn_sigma, class_cond=class_cond,
                         use_checkpoint=use_checkpoint, attention_resolutions=attention_resolutions,
                         num_heads=num_heads, num_heads_upsample=num_heads_upsample,
                         use_scale_shift_norm=use_scale_shift_norm, dropout=dropout, channel_mult=channel_mult,
                         num_classes=num_classes, image_channels=image_channels,
                         class_dropout_prob=class_dropout_prob)
    diffusion = create_gaussian_diffusion(steps=diffusion_steps, learn_sigma=learn_sigma, sigma_small=sigma_small,
                                          noise_schedule=noise_schedule, use_kl=use_kl,
                                          predict_xstart=predict_xstart, rescale_timesteps=rescale_timesteps,
                                          rescale_learned_sigmas=rescale_learned_sigmas,
                                          timestep_respacing=timestep_respacing, predict_v=predict_v,
                                          snr_gamma=snr_gamma)
    return model, diffusion


def _attention_ds(attention_resolutions, image_size):
    # Resolutions in pixels ("16,8") become downsample rates (32 px: 2, 4). "none" (or empty)
    # means no attention layer: a flag file cannot pass an empty word through word splitting.
    text = str(attention_resolutions).strip()
    if text.lower() == "none":
        return ()
    try:
        return tuple(image_size // int(res) for res in text.split(",") if res.strip())
    except ValueError:
        raise ValueError(f"--attention_resolutions {attention_resolutions!r}: expected pixel sizes like 16,8 "
                         "or none") from None


def create_model(image_size, num_channels, num_res_blocks, learn_sigma, class_cond, use_checkpoint,
                 attention_resolutions, num_heads, num_heads_upsample, use_scale_shift_norm, dropout,
                 channel_mult="", num_classes=NUM_CLASSES, image_channels=3, class_dropout_prob=0.0):
    if image_channels not in (1, 3):
        raise ValueError(f"--image_channels {image_channels}: must be 1 (grayscale) or 3 (RGB)")
    if not 0 <= class_dropout_prob < 1:
        raise ValueError(f"--class_dropout_prob {class_dropout_prob}: must be in [0, 1)")
    if class_dropout_prob and not class_cond:
        raise ValueError(f"--class_dropout_prob {class_dropout_prob} needs --class_cond True (it drops labels)")
    return UNetModel(
        in_channels=image_channels,
        model_channels=num_channels,
        out_channels=2 * image_channels if learn_sigma else image_channels,  # mean (and variance) per channel
        num_res_blocks=num_res_blocks,
        attention_resolutions=_attention_ds(attention_resolutions, image_size),
        dropout=dropout,
        channel_mult=parse_channel_mult(channel_mult, image_size),
        num_classes=num_classes if class_cond else None,
        use_checkpoint=use_checkpoint,
        num_heads=num_heads,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        null_class=class_dropout_prob > 0,
    )


def sr_model_and_diffusion_defaults():
    res = model_and_diffusion_defaults()
    res["large_size"] = 256
    res["small_size"] = 64
    arg_names = inspect.getfullargspec(sr_create_model_and_diffusion)[0]
    return {k: v for k, v in res.items() if k in arg_names}


def sr_create_model_and_diffusion(large_size, small_size, class_cond, learn_sigma, num_channels, num_res_blocks,
                                  num_heads, num_heads_upsample, attention_resolutions, dropout, diffusion_steps,
                                  noise_schedule, timestep_respacing, use_kl, predict_xstart, rescale_timesteps,
                                  rescale_learned_sigmas, use_checkpoint, use_scale_shift_norm):
    model = sr_create_model(large_size, small_size, num_channels, num_res_blocks, learn_sigma=learn_sigma,
                            class_cond=class_cond, use_checkpoint=use_checkpoint,
                            attention_resolutions=attention_resolutions, num_heads=num_heads,
                            num_heads_upsample=num_heads_upsample, use_scale_shift_norm=use_scale_shift_norm,
                            dropout=dropout)
    diffusion = create_gaussian_diffusion(steps=diffusion_steps, learn_sigma=learn_sigma,
                                          noise_schedule=noise_schedule, use_kl=use_kl,
                                          predict_xstart=predict_xstart, rescale_timesteps=rescale_timesteps,
                                          rescale_learned_sigmas=rescale_learned_sigmas,
                                          timestep_respacing=timestep_respacing)
    return model, diffusion


def sr_create_model(large_size, small_size, num_channels, num_res_blocks, learn_sigma, class_cond, use_checkpoint,
                    attention_resolutions, num_heads, num_heads_upsample, use_scale_shift_norm, dropout):
    """The super-resolution UNet (SuperResModel) for `large_size` (64 or 256) outputs."""
    del small_size  # part of the signature only; the model is built for large_size
    if large_size not in (64, 256):
        raise ValueError(f"unsupported large size: {large_size}")
    return SuperResModel(
        in_channels=3,
        model_channels=num_channels,
        out_channels=6 if learn_sigma else 3,
        num_res_blocks=num_res_blocks,
        attention_resolutions=_attention_ds(attention_resolutions, large_size),
        dropout=dropout,
        channel_mult=_CHANNEL_MULT[large_size],
        num_classes=NUM_CLASSES if class_cond else None,
        use_checkpoint=use_checkpoint,
        num_heads=num_heads,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
    )


def create_gaussian_diffusion(*, steps=1000, learn_sigma=False, sigma_small=False, noise_schedule="linear",
                              use_kl=False, predict_xstart=False, rescale_timesteps=False,
                              rescale_learned_sigmas=False, timestep_respacing="", predict_v=False, snr_gamma=0.0):
    if predict_v and predict_xstart:
        raise ValueError("--predict_v True and --predict_xstart True: the model predicts one of v, x_0 (or eps)")
    betas = gd.get_named_beta_schedule(noise_schedule, steps)
    if use_kl:
        loss_type = gd.LossType.RESCALED_KL
    elif rescale_learned_sigmas:
        loss_type = gd.LossType.RESCALED_MSE
    else:
        loss_type = gd.LossType.MSE
    if learn_sigma:
        var_type = gd.ModelVarType.LEARNED_RANGE
    else:
        var_type = gd.ModelVarType.FIXED_SMALL if sigma_small else gd.ModelVarType.FIXED_LARGE
    return SpacedDiffusion(
        use_timesteps=space_timesteps(steps, timestep_respacing or [steps]),
        betas=betas,
        model_mean_type=(gd.ModelMeanType.START_X if predict_xstart else gd.ModelMeanType.V if predict_v
                         else gd.ModelMeanType.EPSILON),
        model_var_type=var_type,
        loss_type=loss_type,
        rescale_timesteps=rescale_timesteps,
        snr_gamma=snr_gamma,
    )


def add_dict_to_argparser(parser, default_dict, helps=None, types=None):
    """One --flag per key, typed like its default (bools via str2bool, None as str), as openai.
    `helps` gives flags their help lines (default: MODEL_FLAG_HELP's) and `types` parse-time
    types that also range-check (default: MODEL_FLAG_TYPES'); the defaults stay as given."""
    helps = {**MODEL_FLAG_HELP, **(helps or {})}
    types = {**MODEL_FLAG_TYPES, **(types or {})}
    for k, v in default_dict.items():
        if k in types:
            v_type = types[k]
        elif v is None:
            v_type = str
        elif isinstance(v, bool):
            v_type = str2bool
        else:
            v_type = type(v)
        parser.add_argument(f"--{k}", default=v, type=v_type, help=helps.get(k))


def args_to_dict(args, keys):
    return {k: getattr(args, k) for k in keys}


