"""Issue 39 item 2: no collective from rank-0-only code.

trainkit.dist.rank_zero_only() marks a section that runs on one rank; inside it every
collective raises at once with one line naming it (with $TRAINKIT_COLLECTIVE_GUARD=1 even in a
single process, and torch.distributed's own collectives too). The quality probe with Inception
features and no weights file used to reach dist.broadcast_object from rank 0 alone (a hang):
its weights are now found on every rank before training."""

import argparse

import numpy as np
import pytest
import torch
import torch.distributed as td

import helpers
from evaluations import fid, inception, probe
from trainkit import dist


@pytest.fixture
def guard(monkeypatch):
    monkeypatch.setenv(dist.GUARD_ENV, "1")


@pytest.mark.parametrize("call,name", [
    (lambda: dist.broadcast_object("x"), "collective broadcast_object"),
    (dist.barrier, "collective barrier"),
    (lambda: dist.all_reduce_sum(1.0), "collective all_reduce"),
    (lambda: dist.all_reduce_max_ints([1]), "collective all_reduce_max_ints"),
    (lambda: dist.all_gather_object(1), "collective all_gather_object"),
    (lambda: dist.gather_object(1), "collective gather_object"),
    (lambda: td.all_reduce(torch.zeros(1)), "collective torch.distributed.all_reduce"),
    (lambda: td.broadcast_object_list([1]), "collective torch.distributed.broadcast_object_list"),
])
def test_a_collective_inside_a_rank_zero_section_raises_one_line(guard, call, name):
    with pytest.raises(RuntimeError) as e:
        with dist.rank_zero_only("the probe"):
            call()
    msg = str(e.value)
    assert msg.startswith(f"{name} called inside the rank-0-only section 'the probe'") and "\n" not in msg
    # the section is over: the helpers (no-ops without a group) and torch's functions are back
    assert dist.broadcast_object("x") == "x" and dist.all_reduce_sum(2.0) == 2.0
    assert td.all_reduce is not None and "lambda" not in td.all_reduce.__name__


def test_without_a_group_or_the_variable_the_section_changes_nothing(monkeypatch):
    monkeypatch.delenv(dist.GUARD_ENV, raising=False)
    with dist.rank_zero_only("x"):
        assert dist.broadcast_object(3) == 3


def _fake_inception(monkeypatch, tmp_path):
    """Inception stand-in (the real net is slow on 2 cores): the default weights file exists in a
    temporary TORCH_HOME, the net is each image's mean spread over 2048 dims."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    path = inception.default_weights_path()
    (tmp_path / "home" / "hub" / "checkpoints").mkdir(parents=True)
    open(path, "wb").close()

    class Pool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.arange(1.0, 2049.0).reshape(1, 2048, 1, 1) / 2048)

        def forward(self, x):
            return [x.mean(dim=(1, 2, 3), keepdim=True) * self.w]

    monkeypatch.setattr(inception, "build_inception", lambda dims, p, device: Pool())
    monkeypatch.setattr(inception, "load_weights", lambda p: {"fc.weight": torch.ones(1008, 2048)})
    rng = np.random.default_rng(0)
    ref = tmp_path / "ref.npz"
    np.savez(ref, features=rng.normal(size=(40, 2048)))
    return path, ref


def test_inception_probe_runs_on_rank_zero_without_collectives(guard, monkeypatch, tmp_path):
    path, ref = _fake_inception(monkeypatch, tmp_path)
    args = argparse.Namespace(probe_points=2, probe_samples=8, probe_features="inception", probe_reference=str(ref),
                              probe_inception_weights="")
    pr = probe.from_args(args, 16)  # every rank, before training: may be collective
    assert pr.inception_weights == path
    images = np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    with dist.rank_zero_only("quality probe"):  # as trainkit.loop runs it
        out = pr(images)
    assert np.isfinite(out["fd"])
    # and finding the weights is the collective step that had to move out of the section
    with pytest.raises(RuntimeError, match="collective broadcast_object called inside"):
        with dist.rank_zero_only("quality probe"):
            fid.ensure_weights(None)


@pytest.mark.slow
def test_two_rank_training_with_the_probe_under_the_guard(tmp_path, digits):
    """torchrun 2 ranks, gans.train with the probe on, every rank-0-only section guarded: the run
    ends 0 and writes its probe rows (a collective in any of them would fail it at once)."""
    run_dir = tmp_path / "run"
    proc = helpers.launch("torchrun", 2, "gans.train", "--data_dir", digits(16), "--logdir", run_dir,
                          "--nz", 8, "--ngf", 8, "--ndf", 8, "--batch_size", 8, "--max_steps", 4,
                          "--save_interval", 2, "--probe_points", 2, "--probe_samples", 20,
                          flag_files=[helpers.ROOT / "flags" / "gans" / "cdcgan_digits.sh"],
                          env=helpers.test_env(**{dist.GUARD_ENV: "1"}))
    assert proc.returncode == 0, helpers.describe(proc)
    rows = (run_dir / "quality.csv").read_text().splitlines()
    assert len(rows) == 3, rows  # header, the mid-run probe, the last step's
