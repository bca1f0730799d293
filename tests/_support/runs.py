"""Recipes of the tiny trained runs the session shares (conftest's trained_run/copy_run fixtures
train each once, on first use).

family:      the fault tests' tiny command of each family (faultlib.FAMILIES), 2 steps, a
             checkpoint at each: "improved_diffusion", "ddgan", "gans" (dcgan)
id_cond:     improved diffusion class-conditional (flags.ID_TINY), one checkpoint at step 2
ddgan_small: DDGAN's digits flag file made smaller (flags.DDGAN_SMALL), step 2"""

import helpers
from _support import faultlib
from _support.flags import DDGAN_FLAGS, DDGAN_SMALL, ID_FLAGS, ID_TINY

RUN_RECIPES = {
    "improved_diffusion": ("family", "improved_diffusion"),
    "ddgan": ("family", "ddgan"),
    "gans": ("family", "gans"),
    "id_cond": ("id_cond", None),
    "ddgan_small": ("ddgan_small", None),
}


def train_recipe(name, data, run_dir):
    """The finished process that trained recipe `name` on `data` into `run_dir`."""
    kind, family = RUN_RECIPES[name]
    if kind == "family":
        f = faultlib.FAMILIES[family]
        argv = [*f.flag_argv(), *f.tiny, "--data_dir", data, "--logdir", run_dir, "--max_steps", 2,
                "--save_interval", 1]
        return helpers.py(f.module, *argv)
    if kind == "id_cond":
        return helpers.launch("local", 1, "improved_diffusion.train", "--data_dir", data, "--logdir", run_dir,
                              *ID_TINY, "--max_steps", 2, "--save_interval", 2, flag_files=[ID_FLAGS])
    return helpers.launch("local", 1, "ddgan.train", "--data_dir", data, "--batch_size", 4, *DDGAN_SMALL,
                          "--max_steps", 2, "--save_interval", 2, "--logdir", run_dir, flag_files=[DDGAN_FLAGS])
