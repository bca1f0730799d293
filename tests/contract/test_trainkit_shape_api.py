"""trainkit's one-shape API (issue 38): the sampling-weights rule, the EMA save/load pair and its
missing-file policy, the loss-scale layout, the samples info json, the GAN helpers, the checks
samplers share, and "rank 0 decides" across two real processes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import helpers
from trainkit import checkpoint, dist, ema, gan, npz, phema, precision
from trainkit.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --- C1: checkpoint.sampling_weights ------------------------------------------------------------

def _ck(step, prefixes, state=None):
    return checkpoint.Checkpoint("/run", step, {p: checkpoint.filename(p, step) for p in prefixes}, state)


@pytest.mark.parametrize("step,prefixes,state,want", [
    # recorded beats a settled EMA, even when it is the raw model
    (1000, ["model", "ema_0.9_"], {"sample_weights": "model"}, "model"),
    (1000, ["model", "ema_0.9_", "ema_kimg1.0_"], {"sample_weights": "ema_kimg1.0_"}, "ema_kimg1.0_"),
    # a record naming a file the step lacks falls back to the settled rule
    (1000, ["model", "ema_0.9_"], {"sample_weights": "phema_0.05_"}, "ema_0.9_"),
    # no record (openai's folder, an older state file): 0.9**100 = 2.7e-5 settled, 0.999**100 = 0.90 not
    (100, ["model", "ema_0.9_", "ema_0.999_"], None, "ema_0.9_"),
    (100, ["model", "ema_0.9_", "ema_0.999_"], {}, "ema_0.9_"),
    # 0.999**5000 = 0.0067 < 1%: the highest settled rate
    (5000, ["model", "ema_0.9_", "ema_0.999_", "ema_0.9999_"], None, "ema_0.999_"),
    # 0.9**10 = 0.35: nothing settled yet; a half-life average is not a rate
    (10, ["model", "ema_0.9_", "ema_kimg1.0_"], None, "model"),
    (10, ["model"], None, "model"),
])
def test_sampling_weights_recorded_then_settled_ema_then_model(step, prefixes, state, want):
    assert checkpoint.sampling_weights(_ck(step, prefixes, state)) == want


def test_sampling_weights_of_a_saved_run_directory(tmp_path):
    m = torch.nn.Linear(2, 2)
    averages = ema.EMA(m, "0.9,0.999")
    checkpoint.save(str(tmp_path), 100, {"model": m.state_dict(), **ema.save_states(m, averages)}, {})
    ck = checkpoint.resolve(str(tmp_path))
    assert ck.prefixes() == ["ema_0.999_", "ema_0.9_", "model"]
    assert checkpoint.sampling_weights(ck) == "ema_0.9_"


# --- C2: the EMA save/load pair, one missing-file policy ------------------------------------------

def _net():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def _train_a_little(net, averages, steps=3):
    for i in range(steps):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * (i + 1))
        ema.Chain(*averages).update(net)


def test_ema_states_round_trip_and_a_missing_file_restarts_from_the_model_with_one_line(tmp_path):
    torch.manual_seed(0)
    net = _net()
    fixed = ema.EMA(net, "0.9")
    half = ema.HalfLifeEMA(net, 0.01, None, images_per_step=4)
    _train_a_little(net, [fixed, half])
    files = ema.save_states(net, fixed, None, half)
    assert sorted(files) == ["ema_0.9_", "ema_kimg0.01_"]
    checkpoint.save(str(tmp_path), 3, {"model": net.state_dict(), **files}, ema.averages_state(fixed, half))
    ck = checkpoint.latest(str(tmp_path))

    torch.manual_seed(1)
    net2 = _net()
    net2.load_state_dict(ck.load("model"))
    fixed2 = ema.EMA(net2, "0.9,0.5")  # a rate added on resume
    half2 = ema.HalfLifeEMA(net2, 0.01, None, images_per_step=4)
    power2 = phema.PowerEMA(net2, "0.1", images_per_step=4)  # an average the step never had
    lines = []
    ema.load_states(ck, net2, fixed2, None, half2, power2, log=lines.append)

    for a, b in zip(fixed2.shadows[0.9], fixed.shadows[0.9]):
        assert torch.equal(a, b)
    for a, b in zip(half2.shadow, half.shadow):
        assert torch.equal(a, b)
    assert half2.nimg == half.nimg == 12
    # the missing ones: the model's loaded weights, and one line each naming the file and step
    for a, p in zip(fixed2.shadows[0.5], net2.parameters()):
        assert torch.equal(a, p)
    for a, p in zip(power2.shadows[0], net2.parameters()):
        assert torch.equal(a, p)
    assert lines[0] == "no ema_0.5_000003.pt at step 3: EMA 0.5 restarts from the model weights"
    assert lines[1].startswith("no phema_0.1_000003.pt at step 3: the σ_rel 0.1 average restarts")
    assert len(lines) == 3 and "records no images seen" in lines[2]
    # saved again, the restored averages are the files they came from, bit for bit
    again = ema.save_states(net2, fixed2)
    for k, v in files["ema_0.9_"].items():
        assert torch.equal(again["ema_0.9_"][k], v)


def test_ema_file_from_a_wrapper_loads_and_a_misfit_is_one_line_naming_it(tmp_path):
    net = _net()
    fixed = ema.EMA(net, "0.9")
    sd = {"module." + k: v + 1 for k, v in ema.save_states(net, fixed)["ema_0.9_"].items()}
    checkpoint.save(str(tmp_path), 1, {"model": net.state_dict(), "ema_0.9_": sd}, {})
    ema.load_states(checkpoint.latest(str(tmp_path)), net, fixed, log=pytest.fail)
    assert torch.equal(fixed.shadows[0.9][0], net[0].weight + 1)

    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5))
    checkpoint.save(str(tmp_path), 2, {"model": net.state_dict(), "ema_0.9_": other.state_dict()}, {})
    with pytest.raises(UserError) as e:
        ema.load_states(checkpoint.latest(str(tmp_path)), net, fixed, log=pytest.fail)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "ema_0.9_000002.pt")) and "EMA 0.9" in msg


def test_ema_rate_flag_type():
    assert ema.rates_arg("0.9999,0.999") == "0.9999,0.999" and ema.rates_arg("") == ""
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match=r"^1.5 is outside \[0, 1\)$"):
        ema.rates_arg("1.5")


# --- C3: loss-scale state, one key per optimizer -----------------------------------------------

def _scalers(g=2.0 ** 16, d=2.0 ** 16, mode="fp16"):
    return {"g": precision.Precision(mode, "cpu", init_scale=g), "d": precision.Precision(mode, "cpu", init_scale=d)}


def test_precision_new_layout_round_trips_through_a_state_file(tmp_path):
    net = torch.nn.Linear(1, 1)
    checkpoint.save(str(tmp_path), 1, {"model": net.state_dict()},
                    {"precision": precision.state_dict(_scalers(g=8.0, d=32.0))})
    state = checkpoint.latest(str(tmp_path)).state
    assert sorted(state["precision"]) == ["d", "g"]
    fresh = _scalers()
    precision.load_state_dict(fresh, state)
    assert (fresh["g"].scale, fresh["d"].scale) == (8.0, 32.0)
    assert precision.log_values(fresh) == {"loss_scale_g": 8.0, "loss_scale_d": 32.0}
    assert precision.log_values(_scalers(mode="bf16")) == {}


@pytest.mark.parametrize("layout", ["gans", "ddgan"])
def test_precision_old_two_optimizer_layouts_load(layout):
    old = _scalers(g=8.0, d=32.0)
    if layout == "gans":
        state = {"precision": {"g": old["g"].state_dict(), "d": old["d"].state_dict()}}
    else:
        state = {"precision_g": old["g"].state_dict(), "precision_d": old["d"].state_dict(), "epoch": 3}
    fresh = _scalers()
    precision.load_state_dict(fresh, state)
    assert (fresh["g"].scale, fresh["d"].scale) == (8.0, 32.0)


def test_precision_bare_layout_loads_into_one_optimizer_and_is_refused_for_two():
    bare = {"precision": precision.Precision("fp16", "cpu", init_scale=4.0).state_dict(), "schedule_sampler": {}}
    one = {"model": precision.Precision("fp16", "cpu")}
    precision.load_state_dict(one, bare)
    assert one["model"].scale == 4.0
    with pytest.raises(UserError) as e:
        precision.load_state_dict(_scalers(), bare)
    assert "\n" not in str(e.value) and "one loss scale" in str(e.value)
    # no loss scale at all (an adopted openai step): the fresh scales stay
    fresh = _scalers()
    precision.load_state_dict(fresh, None)
    assert fresh["g"].scale == 2.0 ** 16


# --- C4: the samples info json beside the npz ---------------------------------------------------

def _images(n=3):
    return np.arange(n * 4 * 4 * 3, dtype=np.uint8).reshape(n, 4, 4, 3)


def test_samples_info_is_written_beside_the_npz_and_read_back(tmp_path):
    info = {"sampler": "ddim", "network_evaluations": 10, "seed": 0, "steps": 10}
    path = npz.write_samples(str(tmp_path), _images(), np.array([1, 2, 3]), info=info)
    sidecar = tmp_path / "samples_3x4x4x3.json"
    assert path == str(tmp_path / "samples_3x4x4x3.npz") and sidecar.exists()
    assert json.loads(sidecar.read_text()) == {**info, "num_samples": 3}
    assert npz.read_sample_info(path) == {**info, "num_samples": 3}
    assert sorted(os.listdir(tmp_path)) == ["samples_3x4x4x3.json", "samples_3x4x4x3.npz"]  # no temporaries
    # the same shape written again without info: the old json would describe other samples
    npz.write_samples(str(tmp_path), _images(), info=None)
    assert not sidecar.exists() and npz.read_sample_info(path) is None


@pytest.mark.parametrize("content,words", [
    ("{not json", "not readable sample info"),
    ('["a list"]', "must be a JSON object"),
    ('{"sampler": "ddim", "network_evaluations": 10, "num_samples": 3}', "lacks 'seed'"),
    ('{"sampler": "ddim", "network_evaluations": "10", "num_samples": 3, "seed": null}',
     "'network_evaluations' must be int"),
    ('{"sampler": "ddim", "network_evaluations": true, "num_samples": 3, "seed": null}',
     "'network_evaluations' must be int"),
    ('{"sampler": 1, "network_evaluations": 10, "num_samples": 3, "seed": null}', "'sampler' must be str"),
])
def test_a_bad_samples_info_is_one_line_naming_the_json(tmp_path, content, words):
    path = npz.write_samples(str(tmp_path), _images())
    sidecar = tmp_path / "samples_3x4x4x3.json"
    sidecar.write_text(content)
    with pytest.raises(UserError) as e:
        npz.read_sample_info(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{sidecar}: ") and words in msg


def test_write_samples_refuses_info_that_does_not_match_and_writes_nothing(tmp_path):
    with pytest.raises(UserError, match=r"num_samples 5, but 3 images"):
        npz.write_samples(str(tmp_path), _images(), info={"sampler": "x", "network_evaluations": 1,
                                                            "num_samples": 5, "seed": None})
    with pytest.raises(UserError, match="lacks 'network_evaluations'"):
        npz.write_samples(str(tmp_path), _images(), info={"sampler": "x", "seed": None})
    assert os.listdir(tmp_path) == []


# --- C5: GAN helpers, the checks samplers share, rank 0 decides -----------------------------------

def test_frozen_restores_d_in_a_finally_and_keeps_a_frozen_parameter_frozen():
    D = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    D[0].bias.requires_grad_(False)  # e.g. a fixed embedding: not D's to unfreeze
    x = torch.randn(4, 2, requires_grad=True)
    with pytest.raises(RuntimeError, match="skipped"):
        with gan.frozen(D):
            assert not any(p.requires_grad for p in D.parameters())
            gan.g_loss(D(x).view(-1)).backward()
            assert x.grad is not None and all(p.grad is None for p in D.parameters())
            raise RuntimeError("skipped")
    assert [p.requires_grad for p in D.parameters()] == [True, False, True, True]


def test_gan_losses_closed_forms_and_a_bad_kind_is_one_line():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    assert gan.d_loss_real(real, "hinge").item() == pytest.approx(1.0)   # (0 + 2) / 2
    assert gan.d_loss_fake(fake, "hinge").item() == pytest.approx(0.75)  # (1.5 + 0) / 2
    assert gan.g_loss(torch.zeros(3)).item() == pytest.approx(np.log(2))
    with pytest.raises(UserError, match=r"^--loss 'wgan': choose bce or hinge$"):
        gan.check_loss("wgan")


def test_saved_flag_contradictions_name_the_options_file(tmp_path):
    (tmp_path / "options.json").write_text(json.dumps({"num_channels": 64, "lr": 1e-4, "class_cond": False}))
    found = checkpoint.saved_flag_contradictions(str(tmp_path) + "/", {"num_channels": 32, "class_cond": None,
                                                                        "lr": 3.0}, keys=("num_channels", "class_cond"))
    assert found == [f"--num_channels 32, but {tmp_path}/options.json has 64"]
    released = tmp_path / "released"
    released.mkdir()
    assert checkpoint.saved_flag_contradictions(str(released), {"num_channels": 32}, ("num_channels",)) == []


_DECIDE = textwrap.dedent("""
    import datetime, os, sys
    import torch.distributed as td
    from trainkit import dist
    from trainkit.errors import UserError
    rank, port, what = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                          timeout=datetime.timedelta(seconds=60))
    def decide():
        if what == "error":
            raise UserError(f"/data/x: refused on rank {rank}")
        return f"rank {rank}'s view"
    try:
        print("value:", dist.rank_zero_decides(decide), flush=True)
    except UserError as e:
        print("error:", e, flush=True)
        sys.exit(2)
    finally:
        td.destroy_process_group()
""")


@pytest.mark.parametrize("what", ["value", "error"])
def test_rank_zero_decides_tells_every_rank_the_value_or_the_error(what):
    port = str(helpers.free_port())
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _DECIDE, str(r), port, what], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    # each rank's last line: gloo itself prints "[Gloo] Rank r is connected to 1 peer ranks" on
    # stdout on some torch versions (2.8, the floor)
    last = [(o.strip().splitlines() or [""])[-1] for o, _ in outs]
    if what == "value":
        assert codes == [0, 0], outs
        assert last == ["value: rank 0's view"] * 2, outs
    else:
        assert codes == [2, 2], outs
        assert last == ["error: /data/x: refused on rank 0"] * 2, outs


def test_rank_zero_decides_alone_returns_or_raises_the_original():
    assert dist.rank_zero_decides(lambda a: a + 1, 2) == 3

    def damaged():
        raise checkpoint.Unreadable("/r/model000001.pt: not a readable checkpoint")
    with pytest.raises(checkpoint.Unreadable):
        dist.rank_zero_decides(damaged)


def test_rank_zero_decides_in_a_one_process_world_posing_as_rank_1(monkeypatch):
    monkeypatch.setattr(dist, "rank", lambda: 1)
    monkeypatch.setattr(dist, "is_main", lambda: False)
    assert dist.rank_zero_decides(lambda: "decided") == "decided"
