"""trainkit.loop in one process: device statistics, the vote cadence, the non-finite policy, the
world-size policy of resume, the consistency check, and the shared helpers the families use
(dist.ddp_sync, optim.grad_norm, checkpoint.load_into / checked reads / the overwrite guard)."""

import contextlib
import math
import time

import numpy as np
import pytest
import torch

from _support.tasks import Scalar
from trainkit import checkpoint, data, dist, loop, optim, run
from trainkit.errors import UserError
from trainkit.logger import Logger, read_progress

# --- statistics on the device -------------------------------------------------------------

def test_step_stats_are_means_of_observations_and_of_sum_count_pairs():
    s = loop.StepStats()
    s.add({"a": torch.tensor(1.0), "b": (torch.tensor(6.0), torch.tensor(3.0))}, step=1)
    s.add({"a": torch.tensor(3.0), "b": (torch.tensor(4.0), torch.tensor(1.0))}, step=2)
    s.add({"c": torch.tensor(5.0)}, step=3)  # another set of keys (e.g. R1 only on some steps)
    out = s.pop()
    assert out == {"a": (4.0, 2.0), "b": (10.0, 4.0), "c": (5.0, 1.0)}
    assert s.pop() == {} and s.bad_code() == 0


def test_a_non_finite_step_is_left_out_and_its_step_remembered():
    s = loop.StepStats()
    s.add({"a": torch.tensor(1.0)}, step=1)
    s.add({"a": torch.tensor(float("nan"))}, step=2)
    s.add({"a": torch.tensor(float("inf"))}, step=3)
    s.add({"a": torch.tensor(2.0)}, step=4)
    assert s.bad_code() == loop._BAD_BASE - 2  # the first bad step, not the last
    assert s.pop() == {"a": (3.0, 2.0)}


def test_logger_merges_pre_summed_observations_like_logkv_mean(tmp_path):
    a, b = Logger(str(tmp_path / "a"), stdout=False), Logger(str(tmp_path / "b"), stdout=False)
    for v in (1.0, 2.0, 6.0):
        a.logkv_mean("x", v)
    b.logkv_sum("x", 9.0, 3)
    b.logkv_sum("never", 5.0, 0)  # no observation: no column
    assert a.dumpkvs() == b.dumpkvs() == {"x": 3.0}


# --- the vote cadence -------------------------------------------------------------------

@pytest.mark.parametrize("step_s,cost_s,expected", [
    (0.008, 0.001, 13),  # a DCGAN step on the CPU and a gloo all-reduce: vote every 13 steps
    (0.5, 0.001, 1),  # a diffusion step: the vote is lost in it
    (0.001, 0.5, int(loop.MAX_VOTE_GAP_S / 0.001)),  # capped: votes stay MAX_VOTE_GAP_S apart
    (5.0, 0.0, 1),
])
def test_vote_interval_keeps_the_vote_under_one_percent(step_s, cost_s, expected):
    k = loop.vote_interval(step_s, cost_s)
    assert k == expected
    if k < int(loop.MAX_VOTE_GAP_S / step_s) and cost_s:  # not capped: the vote costs <= 1%
        assert cost_s / (k * step_s) <= loop.VOTE_SHARE + 1e-12


# --- the loop with a fake family ------------------------------------------------------------

def _images(n=32):
    return data.ImageData(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), None, "fake")


def _run(tmp_path, resume=""):
    import argparse

    return run.setup("test", argparse.Namespace(logdir=str(tmp_path), seed=0), resume=resume, stdout=False)


@pytest.fixture
def signals():
    import signal
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_the_loop_votes_every_k_steps_not_every_step(tmp_path, monkeypatch, signals):
    """With a vote that costs far more than a step, the ranks vote after step 1 (the first vote
    measures), then not again until the last step, which always votes."""
    votes = []
    real = dist.all_reduce_max_ints

    def costly_vote(values):
        votes.append(list(values))
        values = list(values)
        values[3] = 10**6  # the last vote took 1 s
        return real(values)

    monkeypatch.setattr(dist, "all_reduce_max_ints", costly_vote)
    lp = loop.Loop(_run(tmp_path), Scalar(), data.Batches(_images(), 4), total_steps=50, log_interval=1000)
    assert lp.run_loop() == 50
    assert len(votes) == 2 and lp.vote_every > 50


def test_a_nan_loss_stops_before_anything_with_it_is_written(tmp_path, signals):
    task = Scalar([1.0, 1.0, 1.0, float("nan")])
    lp = loop.Loop(_run(tmp_path), task, data.Batches(_images(), 4), total_steps=10, log_interval=2,
                   save_interval=2)
    with pytest.raises(loop.TrainingDiverged) as e:
        lp.run_loop()
    msg = str(e.value)
    assert "loss is not finite at step 4" in msg and "last good checkpoint is step 2" in msg
    assert checkpoint.latest(str(tmp_path)).step == 2 and checkpoint.state_steps(str(tmp_path)) == [2]
    assert lp.logger._log_txt.closed  # the logger is closed on the way out


def test_under_fp16_a_nan_step_is_skipped_and_training_goes_on(tmp_path, signals):
    task = Scalar([1.0, float("inf"), 3.0, 5.0])
    lp = loop.Loop(_run(tmp_path), task, data.Batches(_images(), 4), total_steps=4, log_interval=4,
                   precision="fp16")
    assert lp.run_loop() == 4
    rows = read_progress(tmp_path)
    assert rows[-1]["loss"] == pytest.approx(3.0)  # mean of 1, 3, 5: the inf step left out
    assert "fp16: a loss was not finite at step 2" in (tmp_path / "log.txt").read_text()


def test_resume_at_the_last_step_trains_nothing_and_writes_nothing(tmp_path, signals):
    loop.Loop(_run(tmp_path), Scalar(), data.Batches(_images(), 4), total_steps=3).run_loop()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}
    task = Scalar()
    r = _run(tmp_path, resume="auto")
    assert loop.Loop(r, task, data.Batches(_images(), 4), total_steps=3).run_loop() == 3
    assert task.steps == [] and {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")} == before
    assert "nothing to train" in (tmp_path / "log.txt").read_text()


def test_the_last_lines_reach_a_remote_run_directory(tmp_path, monkeypatch, signals):
    """A blobfile URL's files are staged locally and copied up; closing copies the last lines."""
    from trainkit import logger as logger_module

    monkeypatch.setattr(logger_module, "is_local", lambda path: False)
    loop.Loop(_run(tmp_path), Scalar(), data.Batches(_images(), 4), total_steps=3, log_interval=2).run_loop()
    assert (tmp_path / "log.txt").read_text().rstrip().endswith(f"saved checkpoint of step 3 in {tmp_path}")


def test_another_world_size_rederives_the_data_position_and_reseeds(tmp_path, signals):
    b = data.Batches(_images(40), 2, world=2, rank=0)  # a 2-rank run: global batch 4
    assert b.rederive(taken=3, global_batch=4) == "epoch 0, batch 3 of 10"  # 12 images in
    one = data.Batches(_images(40), 2, world=1, rank=0)  # 1 rank: global batch 2
    assert one.rederive(taken=3, global_batch=4) == "epoch 0, batch 6 of 20"
    assert one.rederive(taken=5, global_batch=6) == "epoch 0, batch 15 of 20"
    assert one.rederive(taken=6, global_batch=6) == "epoch 1, batch 0 of 20"  # the old epoch was over
    three = data.Batches(_images(40), 1, world=3, rank=0)
    assert three.rederive(taken=1, global_batch=4) == "epoch 0, batch 2 of 13"  # ceil(4 / 3)
    # a checkpoint of 2 ranks resumed by 1: re-derived, and the run says so
    task = Scalar()
    loop.Loop(_run(tmp_path / "a"), task, data.Batches(_images(), 4), total_steps=2).run_loop()
    state = checkpoint.load(str(tmp_path / "a" / "state000002.pt"))
    state["rng"] = state["rng"] * 2
    state["world_size"], state["data"]["global_batch"] = 2, 8
    checkpoint.save(str(tmp_path / "b"), 2, task.state_dicts(), {k: v for k, v in state.items() if k != "files"})
    batches = data.Batches(_images(), 4)
    lp = loop.Loop(_run(tmp_path / "c", resume=str(tmp_path / "b")), Scalar(), batches, total_steps=3, seed=5)
    lp.run_loop()
    log = (tmp_path / "c" / "log.txt").read_text()
    assert "checkpoint written by 2 rank(s), this run has 1: data position re-derived (epoch 0, batch 4 of 8)" in log
    assert batches.taken == 5


def test_rng_states_of_another_world_size_are_never_restored():
    with pytest.raises(ValueError, match="RNG states of 2 ranks cannot be restored on 1"):
        run.set_rng_state(run.rng_state() * 2)


def test_consistency_check_names_the_rank_that_differs(monkeypatch):
    m = torch.nn.Linear(2, 2)
    mine = loop.parameter_fingerprint({"m": m})
    other = [v + (1e-9 if i == 0 else 0.0) for i, v in enumerate(mine)]
    monkeypatch.setattr(dist, "world_size", lambda: 3)
    monkeypatch.setattr(dist, "all_gather_object", lambda obj: [obj, obj, other])
    with pytest.raises(RuntimeError, match=r"step 7: rank\(s\) \[2\] hold parameters that differ"):
        loop.check_consistency({"m": m}, 7)
    monkeypatch.setattr(dist, "all_gather_object", lambda obj: [obj, obj, obj])
    loop.check_consistency({"m": m}, 7)


# --- shared helpers -----------------------------------------------------------------------

def test_grad_norm_is_the_norm_of_every_gradient_together():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    c = torch.nn.Parameter(torch.zeros(1))  # no gradient: left out
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    n = optim.grad_norm([a, b, c])
    assert torch.is_tensor(n) and float(n) == 5.0


def test_ddp_sync_is_no_sync_only_when_asked_and_only_for_ddp():
    class FakeDDP(torch.nn.Module):
        entered = 0

        @contextlib.contextmanager
        def no_sync(self):
            FakeDDP.entered += 1
            yield

    with dist.ddp_sync(FakeDDP(), sync=True):
        pass
    assert FakeDDP.entered == 0
    with dist.ddp_sync(FakeDDP(), sync=False):
        pass
    assert FakeDDP.entered == 1
    with dist.ddp_sync(torch.nn.Linear(1, 1), sync=False):  # one rank: nothing to skip
        pass


def test_load_into_names_missing_unexpected_and_mis_shaped_keys_in_one_line():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    other = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1), torch.nn.Linear(1, 1))
    with pytest.raises(UserError) as e:
        checkpoint.load_into(net, other.state_dict(), "run/model000005.pt", hint="check --width")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("run/model000005.pt: model weights do not fit the model built "
                                              "from the flags (check --width): ")
    assert "unexpected: 2.weight, 2.bias" in msg and "0.weight (4, 2) vs (3, 2)" in msg
    sd = dict(net.state_dict())
    del sd["1.bias"]
    with pytest.raises(UserError, match="missing: 1.bias"):
        checkpoint.load_into(net, sd, "x.pt")
    ddp_saved = {"module." + k: v for k, v in net.state_dict().items()}
    checkpoint.load_into(net, ddp_saved, "netG.pth")  # DDP's prefix is accepted
    with pytest.raises(UserError, match="opt.pt: optimizer state does not fit"):
        checkpoint.load_optimizer(torch.optim.Adam(net.parameters()),
                                  torch.optim.Adam(other.parameters()).state_dict(), "opt.pt")


def test_an_io_error_reading_a_checkpoint_is_an_error_not_a_rewind(tmp_path, monkeypatch):
    for step in (1, 2):
        checkpoint.save(str(tmp_path), step, {"model": {"w": torch.ones(1) * step}}, {})
    assert checkpoint.latest(str(tmp_path)).step == 2
    real = torch.load

    def failing(f, *args, **kwargs):
        if "state000002" in str(getattr(f, "name", f)):
            raise PermissionError(13, "Permission denied")
        return real(f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "load", failing)
    with pytest.raises(UserError, match=r"state000002.pt: cannot read \(Permission denied\)"):
        checkpoint.latest(str(tmp_path))
    with pytest.raises(UserError, match="state000002.pt: cannot read"):
        run.resume_point("auto", str(tmp_path))
    monkeypatch.setattr(checkpoint.torch, "load", real)
    # a damaged file, by contrast, makes its step incomplete: the newest intact one is taken
    (tmp_path / "state000002.pt").write_bytes(b"garbage")
    assert checkpoint.latest(str(tmp_path)).step == 1


def test_a_complete_step_is_never_overwritten(tmp_path):
    checkpoint.save(str(tmp_path), 3, {"model": {"w": torch.ones(1)}}, {})
    before = (tmp_path / "model000003.pt").read_bytes()
    with pytest.raises(UserError, match="step 3 is already a complete checkpoint"):
        checkpoint.save(str(tmp_path), 3, {"model": {"w": torch.zeros(1)}}, {})
    assert (tmp_path / "model000003.pt").read_bytes() == before
    # a step left half-written by a kill (no state file) is ours to write again
    (tmp_path / "model000004.pt").write_bytes(b"half")
    checkpoint.save(str(tmp_path), 4, {"model": {"w": torch.zeros(1)}}, {})
    assert checkpoint.latest(str(tmp_path)).step == 4


def test_resume_refuses_what_would_overwrite_newer_or_other_steps(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, steps in ((a, (1, 2)), (b, (5,))):
        for s in steps:
            checkpoint.save(str(d), s, {"model": {"w": torch.ones(1)}}, {})
    with pytest.raises(UserError, match="holds step 2, newer than step 1"):
        run.resume_point(str(a / "model000001.pt"), str(a))
    with pytest.raises(UserError, match=f"{b}: already holds checkpoints .newest step 5.; resuming"):
        run.resume_point(str(a), str(b))
    assert run.resume_point(str(a), str(a)).step == 2  # a run directory continuing itself
    assert run.resume_point(str(a), str(tmp_path / "new")).step == 2
    assert math.isfinite(float(checkpoint.load(str(a / "model000002.pt"))["w"]))


# --- the quality probe --------------------------------------------------------------------

class Probed(Scalar):
    """Scalar with a quality probe: its 'images' record the weight they were sampled from."""

    def __init__(self):
        super().__init__()
        self.probed = []

    def probe_images(self, weights, n, seed):
        self.probed.append(float(weights["weight"]))
        return np.zeros((n, 4, 4, 1), np.uint8), None


class FakeProbe:
    """FD = the number of images, std 0.5: what the loop writes is checkable."""
    points, num_samples, name = 4, 3, "FD"

    def __call__(self, images, labels=None):
        return {"fd": float(len(images)), "fd_std": 0.5}


def _probed_loop(tmp_path, total, resume=""):
    task = Probed()
    lp = loop.Loop(_run(tmp_path, resume), task, data.Batches(_images(), 4), total_steps=total, log_interval=1000,
                   save_interval=10, probe=FakeProbe())
    return lp, task


def test_the_quality_probe_runs_at_evenly_spaced_steps_and_at_the_end(tmp_path, signals):
    lp, task = _probed_loop(tmp_path, 40)
    assert lp.run_loop() == 40
    rows = read_progress(str(tmp_path / loop.QUALITY_FILE))
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    # the weights of that step: each step adds 1 to the (random) initial weight
    assert [w - task.probed[0] for w in task.probed] == pytest.approx([0.0, 10.0, 20.0, 30.0])
    assert [r["samples"] for r in rows] == [40, 80, 120, 160]  # batch 4, one rank
    assert all(r["fd"] == 3.0 and r["fd_std"] == 0.5 and r["num_samples"] == 3 for r in rows)
    seconds = [r["train_seconds"] for r in rows]
    assert seconds == sorted(seconds) and all(r["probe_seconds"] >= 0 for r in rows)


def test_a_resumed_run_appends_to_its_quality_rows(tmp_path, signals):
    """The points of a resumed run are spread over what is left of its budget; the rows of the
    earlier run stay as they were."""
    _probed_loop(tmp_path, 20)[0].run_loop()
    first = (tmp_path / loop.QUALITY_FILE).read_text()
    _probed_loop(tmp_path, 40, resume="auto")[0].run_loop()
    text = (tmp_path / loop.QUALITY_FILE).read_text()
    assert text.startswith(first)
    assert [r["step"] for r in read_progress(str(tmp_path / loop.QUALITY_FILE))] == [5, 10, 15, 20, 25, 30, 35, 40]


def test_a_deadline_budget_probes_once_per_step_reached_and_not_twice_at_the_end(tmp_path, monkeypatch, signals):
    """A deadline already past: every time point is reached at step 1, where the run stops; one
    probe covers them all and the end adds none."""
    monkeypatch.setenv("TRAINKIT_DEADLINE", str(time.time() - 1))
    lp, task = _probed_loop(tmp_path, 10**6)
    assert lp.run_loop() == 1
    assert [r["step"] for r in read_progress(str(tmp_path / loop.QUALITY_FILE))] == [1]


def test_a_signal_gets_no_end_probe_and_no_budget_no_probe(tmp_path, monkeypatch, signals):
    lp, task = _probed_loop(tmp_path, 40)
    monkeypatch.setitem(run._signals, "count", 1)  # as after SIGTERM (run.setup resets it): stops at the first vote
    assert lp.run_loop() == 1
    assert not (tmp_path / loop.QUALITY_FILE).exists() and task.probed == []
    other = tmp_path / "unbounded"
    lp, task = _probed_loop(other, None)
    monkeypatch.setitem(run._signals, "count", 1)
    assert lp.run_loop() == 1 and not (other / loop.QUALITY_FILE).exists()
    assert "quality probe off: the run has no budget" in (other / "log.txt").read_text()
