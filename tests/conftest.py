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
