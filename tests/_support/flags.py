"""The small flag sets tests train with, and flag files read the way launch/run.sh reads them
($MODEL_FLAGS $DIFFUSION_FLAGS $<ROLE>_FLAGS: trainkit.flagfile's one reader, named here too)."""

import helpers
from trainkit.flagfile import flag_file_argv

__all__ = ["ID_FLAGS", "ID_TINY", "DDGAN_FLAGS", "DDGAN_SMALL_MODEL", "DDGAN_SMALL", "flag_file_argv"]

# improved diffusion: the digits flag file, made smaller still so that a 2-rank run takes
# seconds; class-conditional so that labels go through training, sampling and the npz.
ID_FLAGS = str(helpers.ROOT / "flags" / "improved_diffusion" / "digits_tiny.sh")
ID_TINY = ["--diffusion_steps", "50", "--class_cond", "True", "--num_classes", "10", "--batch_size", "4",
           "--log_interval", "1", "--lr", "2e-3"]

# DDGAN: the digits flag file made smaller still: a few seconds per step on one core per rank.
DDGAN_FLAGS = helpers.ROOT / "flags" / "ddgan" / "digits16.sh"
DDGAN_SMALL_MODEL = ["--num_channels_dae", "8", "--ngf", "4", "--nz", "8", "--z_emb_dim", "16",
                     "--t_emb_dim", "16", "--n_mlp", "1"]
DDGAN_SMALL = DDGAN_SMALL_MODEL + ["--lazy_reg", "2", "--log_interval", "1"]
