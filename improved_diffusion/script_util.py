"""openai/improved-diffusion's configuration API: the same names, defaults and flags.

`model_and_diffusion_defaults()` is exactly openai's dict, so their flag files and
`create_model_and_diffusion(**defaults)` calls work unchanged. Three extensions live apart
in `model_extension_defaults()` and default to openai's behaviour: `channel_mult` (needed
for image sizes other than 32/64/256, e.g. tiny test models), `num_classes` (1000, the
label embedding size of class-conditional models) and `image_channels` (3; 1 trains grayscale
data as it is, where openai's loader converts every image to RGB).
"""

import inspect

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
    """Model flags that openai does not have; the defaults reproduce openai's models."""
    return dict(channel_mult="", num_classes=NUM_CLASSES, image_channels=3)


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
                               num_classes=NUM_CLASSES, image_channels=3):
    model = create_model(image_size, num_channels, num_res_blocks, learn_sigma=learn_sigma, class_cond=class_cond,
                         use_checkpoint=use_checkpoint, attention_resolutions=attention_resolutions,
                         num_heads=num_heads, num_heads_upsample=num_heads_upsample,
                         use_scale_shift_norm=use_scale_shift_norm, dropout=dropout, channel_mult=channel_mult,
                         num_classes=num_classes, image_channels=image_channels)
    diffusion = create_gaussian_diffusion(steps=diffusion_steps, learn_sigma=learn_sigma, sigma_small=sigma_small,
                                          noise_schedule=noise_schedule, use_kl=use_kl,
                                          predict_xstart=predict_xstart, rescale_timesteps=rescale_timesteps,
                                          rescale_learned_sigmas=rescale_learned_sigmas,
                                          timestep_respacing=timestep_respacing)
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
                 channel_mult="", num_classes=NUM_CLASSES, image_channels=3):
    if image_channels not in (1, 3):
        raise ValueError(f"--image_channels {image_channels}: must be 1 (grayscale) or 3 (RGB)")
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
                              rescale_learned_sigmas=False, timestep_respacing=""):
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
        model_mean_type=gd.ModelMeanType.START_X if predict_xstart else gd.ModelMeanType.EPSILON,
        model_var_type=var_type,
        loss_type=loss_type,
        rescale_timesteps=rescale_timesteps,
    )


def add_dict_to_argparser(parser, default_dict):
    """One --flag per key, typed like its default (bools via str2bool, None as str)."""
    for k, v in default_dict.items():
        if v is None:
            v_type = str
        elif isinstance(v, bool):
            v_type = str2bool
        else:
            v_type = type(v)
        parser.add_argument(f"--{k}", default=v, type=v_type)


def args_to_dict(args, keys):
    return {k: getattr(args, k) for k in keys}


