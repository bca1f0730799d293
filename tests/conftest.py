import pytest
import torch

import helpers

# One intra-op thread for whatever runs torch in the test process itself, as helpers gives every
# subprocess (OMP_NUM_THREADS=1): on the shared 2-core machine a second OpenMP thread waits for a
# busy core at every op (tests/faults/test_bad_inputs.py: 50 s of CPU with one, 58 s with two).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """digits(size=16, split="train") -> Path of the exported sklearn digits image folder."""
    root = tmp_path_factory.mktemp("digits")
    made = {}

    def get(size=16, split="train"):
        if size not in made:
            out = root / f"digits{size}"
            proc = helpers.script("datasets/digits.py", "--out", out, "--size", size, timeout=300)
            assert proc.returncode == 0, helpers.describe(proc)
            made[size] = out
        return made[size] / split

    return get


@pytest.fixture(autouse=True)
def _no_inherited_logdir(monkeypatch):
    # A run directory from the user's shell must not leak into tests.
    monkeypatch.delenv("OPENAI_LOGDIR", raising=False)
    # Nor may a shell's data-cache settings (trainkit/data.py).
    monkeypatch.delenv("TRAINKIT_DATA_CACHE", raising=False)
    monkeypatch.delenv("TRAINKIT_DATA_CACHE_MB", raising=False)
    monkeypatch.delenv("TRAINKIT_DATA_DECODERS", raising=False)


# Trained tiny runs shared by the whole session: each recipe trains once, on first use. A test
# that writes into a run (resumes it, samples into it) takes a copy: copy_run(name, tmp_path).
# family:  the faults' tiny command of each family (tests/faults/faultlib.py), 2 steps, a
#          checkpoint at each: "improved_diffusion", "ddgan", "gans" (dcgan)
# id_cond: improved diffusion class-conditional (test_id_train.TINY), one checkpoint at step 2
# ddgan_small: DDGAN's digits flag file made smaller (test_ddgan_cli.SMALL), step 2
RUN_RECIPES = {
    "improved_diffusion": ("family", "improved_diffusion"),
    "ddgan": ("family", "ddgan"),
    "gans": ("family", "gans"),
    "id_cond": ("id_cond", None),
    "ddgan_small": ("ddgan_small", None),
}


def _train_recipe(name, data, run_dir):
    import sys

    sys.path.insert(0, str(helpers.ROOT / "tests" / "faults"))
    import faultlib

    kind, family = RUN_RECIPES[name]
    if kind == "family":
        f = faultlib.FAMILIES[family]
        argv = [*f.flag_argv(), *f.tiny, "--data_dir", data, "--logdir", run_dir, "--max_steps", 2,
                "--save_interval", 1]
        return helpers.py(f.module, *argv)
    if kind == "id_cond":
        from test_id_train import FLAGS, TINY
        return helpers.launch("local", 1, "improved_diffusion.train", "--data_dir", data, "--logdir", run_dir, *TINY,
                              "--max_steps", 2, "--save_interval", 2, flag_files=[FLAGS])
    from test_ddgan_cli import FLAGS, SMALL
    return helpers.launch("local", 1, "ddgan.train", "--data_dir", data, "--batch_size", 4, *SMALL, "--max_steps", 2,
                          "--save_interval", 2, "--logdir", run_dir, flag_files=[FLAGS])


@pytest.fixture(scope="session")
def trained_run(digits, tmp_path_factory):
    """trained_run(name) -> Path of a finished tiny run (RUN_RECIPES); do not write into it."""
    root = tmp_path_factory.mktemp("trained_runs")
    made = {}

    def get(name):
        if name not in made:
            proc = _train_recipe(name, digits(16), root / name)
            assert proc.returncode == 0, helpers.describe(proc)
            made[name] = root / name
        return made[name]

    return get


@pytest.fixture
def copy_run(trained_run):
    """copy_run(name, dest) -> a private copy of trained_run(name) at dest (a test may write into it)."""
    import shutil

    def copy(name, dest):
        shutil.copytree(trained_run(name), dest)
        return dest

    return copy
