import os

import pytest
import torch

import helpers
from _support import runs
from trainkit import dist

# Every rank-0-only section of the source runs under dist.rank_zero_only (the contract test
# tests/contract/test_rank_zero_sections.py holds it there); with this variable a collective issued
# inside one raises at once, even in a one-process run, instead of hanging the other ranks under a
# real launcher. Set here, before any fixture starts a subprocess, so every test and every child
# process (helpers copies os.environ: mpiexec and torchrun ranks, the fork server) runs under it.
os.environ[dist.GUARD_ENV] = "1"

# One intra-op thread for whatever runs torch in the test process itself, as helpers gives every
# subprocess (OMP_NUM_THREADS=1): on the shared 2-core machine a second OpenMP thread waits for a
# busy core at every op (tests/faults/test_bad_inputs.py: 50 s of CPU with one, 58 s with two).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    # ...and again before each test, in case an entry point run in process changed it.
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


# Trained tiny runs shared by the whole session: each recipe (_support/runs.py) trains once, on
# first use. A test that writes into a run (resumes it, samples into it) takes a copy:
# copy_run(name, tmp_path).
@pytest.fixture(scope="session")
def trained_run(digits, tmp_path_factory):
    """trained_run(name) -> Path of a finished tiny run (_support.runs.RUN_RECIPES); do not write into it."""
    root = tmp_path_factory.mktemp("trained_runs")
    made = {}

    def get(name):
        if name not in made:
            proc = runs.train_recipe(name, digits(16), root / name)
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


@pytest.fixture(scope="module")
def cdcgan_run(tmp_path_factory):
    """A run directory with a step-2 checkpoint of a tiny 16 px conditional model (10 classes):
    the cheapest model a real sampler runs."""
    from gans import dcgan
    from gans.trainer import GANTrainer
    from trainkit import checkpoint, run

    d = tmp_path_factory.mktemp("cdcgan_run")
    torch.manual_seed(0)
    G, D = dcgan.create_models("cdcgan", 16, nz=8, ngf=8, ndf=8, channels=1, num_classes=10)
    t = GANTrainer(G, D, device="cpu")
    checkpoint.save(str(d), 2, t.state_dicts(), {"rng": run.rng_state(), "data": {"batches": 2},
                                                 "precision": t.precision_state()})
    return d
