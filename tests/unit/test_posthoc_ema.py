"""Power-function EMA (trainkit.phema) and its post-hoc reconstruction (trainkit.posthoc_ema):
closed forms on a synthetic parameter trajectory, bit-exact resume, and the samplers reading the
reconstructed weights."""

import json
import os

import numpy as np
import pytest
import torch

import helpers
from trainkit import checkpoint, phema, posthoc_ema
from trainkit.errors import UserError

STEPS, BATCH, EVERY, DIM = 600, 8, 30, 48
TRACKED = (0.05, 0.1)
# the stated tolerance of a reconstructed profile that was not tracked, against the exact
# power-function average of the trajectory (whose values are of order 1): measured 2e-4 for
# σ_rel 0.07 and 3e-4 for 0.15 with these snapshots
UNTRACKED_ATOL = 2e-3


def trajectory():
    """A smooth drift plus noise, like parameters under SGD: θ_i for steps i = 1..STEPS."""
    rng = np.random.default_rng(0)
    t = np.arange(1, STEPS + 1) / STEPS
    freq, phase = rng.uniform(0.5, 3, DIM), rng.uniform(0, 6, DIM)
    return (np.sin(np.outer(t, freq) * 2 * np.pi + phase) + 0.3 * rng.standard_normal((STEPS, DIM))).astype(np.float32)


def exact_average(traj, gamma, upto=STEPS):
    """Σ_i θ_i (t_i^(γ+1) − t_{i−1}^(γ+1)) / T^(γ+1), t_i = i·BATCH: the power function of
    exponent γ over the discrete trajectory (float64)."""
    t = np.arange(0, upto + 1, dtype=np.float64) * BATCH
    w = np.diff(t ** (gamma + 1)) / t[-1] ** (gamma + 1)
    return w @ traj[:upto].astype(np.float64)


def _linear():
    return torch.nn.Linear(DIM, 1, bias=False)


def track(run_dir, traj, stds=TRACKED, every=EVERY):
    """A PowerEMA of a model whose weight follows `traj`, snapshots every `every` steps."""
    model = _linear()
    power = phema.PowerEMA(model, stds, BATCH)
    for i, theta in enumerate(traj, start=1):
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(theta)[None])
        power.update(model)
        phema.snapshot_due(power, every, str(run_dir), i, model)
    return model, power


def test_gamma_is_the_largest_root_and_gives_back_sigma_rel():
    for s in (0.01, 0.05, 0.1, 0.2):
        g = phema.sigma_rel_to_gamma(s)
        assert g ** 3 + 7 * g ** 2 + (16 - s ** -2) * g + (12 - s ** -2) == pytest.approx(0, abs=1e-6 * s ** -2)
        assert phema.gamma_to_sigma_rel(g) == pytest.approx(s, rel=1e-12)
    # edm2's default profiles: σ_rel 0.05 and 0.10 are γ ≈ 16.97 and 6.94
    assert phema.sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert phema.sigma_rel_to_gamma(0.1) == pytest.approx(6.94, abs=0.01)
    with pytest.raises(UserError, match="--ema_std 0.3"):
        phema.parse_stds("0.05,0.3")


def test_the_tracked_average_is_the_discrete_power_function(tmp_path):
    traj = trajectory()
    _, power = track(tmp_path, traj, every=0)
    assert power.nimg == STEPS * BATCH
    for gamma, shadow in zip(power.gammas, power.shadows):
        np.testing.assert_allclose(shadow[0][0].double().numpy(), exact_average(traj, gamma), atol=2e-6)


def test_reconstruction_of_a_tracked_sigma_rel_equals_the_tracked_average(tmp_path):
    traj = trajectory()
    _, power = track(tmp_path, traj)
    assert posthoc_ema.snapshot_steps(str(tmp_path)) == list(range(EVERY, STEPS + 1, EVERY))
    averages, info, weights = posthoc_ema.reconstruct(str(tmp_path), list(TRACKED))
    assert info["step"] == STEPS and info["nimg"] == STEPS * BATCH
    for j, (std, gamma) in enumerate(zip(power.stds, power.gammas)):
        got = averages[j]["weight"][0].double().numpy()
        np.testing.assert_allclose(got, exact_average(traj, gamma), atol=2e-6)
        # the weights pick the last snapshot of that profile alone
        assert weights[:, j].argmax() == len(weights) - len(TRACKED) + j
        assert weights[-len(TRACKED) + j, j] == pytest.approx(1, abs=1e-6)
    # at an earlier step: the average that profile had then
    earlier, info, _ = posthoc_ema.reconstruct(str(tmp_path), [0.05], step=300)
    assert info["snapshots"][-1] == 300
    np.testing.assert_allclose(earlier[0]["weight"][0].double().numpy(),
                               exact_average(traj, phema.sigma_rel_to_gamma(0.05), upto=300), atol=2e-6)


@pytest.mark.parametrize("sigma_rel", [0.07, 0.15])
def test_reconstruction_of_an_untracked_sigma_rel_is_within_tolerance(tmp_path, sigma_rel):
    traj = trajectory()
    track(tmp_path, traj)
    (average,), _, _ = posthoc_ema.reconstruct(str(tmp_path), [sigma_rel])
    exact = exact_average(traj, phema.sigma_rel_to_gamma(sigma_rel))
    got = average["weight"][0].double().numpy()
    assert np.abs(got - exact).max() < UNTRACKED_ATOL
    # not a trivially close target: the nearest tracked profile is 10x the tolerance away
    nearest = min(np.abs(exact_average(traj, phema.sigma_rel_to_gamma(s)) - exact).max() for s in TRACKED)
    assert nearest > 10 * UNTRACKED_ATOL


def test_the_command_writes_a_checkpoint_folder_that_records_its_weights(tmp_path, capsys):
    run_dir = tmp_path / "run"
    track(run_dir, trajectory())
    (run_dir / "options.json").write_text(json.dumps({"lr": 1.0, "_run": {"role": "train"}}))
    out = tmp_path / "out"
    assert posthoc_ema.main([str(run_dir), "--sigma_rel", "0.07,0.1", "--out", str(out)]) == 0
    assert "σ_rel 0.07: step 600" in capsys.readouterr().out
    for sigma in (0.07, 0.1):
        folder = out / f"sigma_rel_{sigma!r}"
        ck = checkpoint.resolve(str(folder))
        prefix = f"ema_posthoc{sigma!r}_"
        assert ck.step == STEPS and ck.prefixes() == [prefix] and ck.state["sample_weights"] == prefix
        assert ck.state["posthoc_ema"]["sigma_rel"] == sigma
        options = json.loads((folder / "options.json").read_text())
        assert options["lr"] == 1.0 and options["_run"]["role"] == "posthoc_ema"
    # no file of the run was rewritten, and a second default output goes to a fresh folder
    assert sorted(os.listdir(run_dir)) == ["options.json", phema.SNAPSHOT_DIR]


def test_the_command_refuses_a_run_without_snapshots_and_a_step_without_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        posthoc_ema.main([str(tmp_path), "--sigma_rel", "0.1"])
    assert e.value.code == 2 and "no power-function EMA snapshots" in capsys.readouterr().err
    track(tmp_path, trajectory()[:60])
    with pytest.raises(SystemExit):
        posthoc_ema.main([str(tmp_path), "--sigma_rel", "0.1", "--step", "31"])
    assert "--step 31: " in capsys.readouterr().err


def _gans_trainer(seed, **kw):
    from gans import dcgan
    from gans.trainer import GANTrainer

    torch.manual_seed(seed)
    G, D = dcgan.create_models("dcgan", 8, nz=4, ngf=4, ndf=4, channels=1)
    return GANTrainer(G, D, device="cpu", images_per_step=6, **kw)


def _batches(n):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(6, 1, 8, 8, generator=g) * 2 - 1, None) for _ in range(n)]


def test_resume_continues_the_profiles_bit_for_bit(tmp_path):
    """Four steps straight, against two steps, a checkpoint, a fresh trainer (other initial
    weights) that loads it, and two more steps: every average file is identical."""
    flags = dict(ema_std="0.05,0.1", ema_kimg=0.01, ema_rampup=0.05, ema_rates="0.9")
    batches = _batches(4)
    straight = _gans_trainer(0, **flags)
    torch.manual_seed(5)
    for s, b in enumerate(batches):
        straight.step(b, s, 0)
    first = _gans_trainer(0, **flags)
    torch.manual_seed(5)
    for s, b in enumerate(batches[:2]):
        first.step(b, s, 0)
    rng = torch.get_rng_state()
    checkpoint.save(str(tmp_path), 2, first.state_dicts(), first.trainer_state())
    resumed = _gans_trainer(1, **flags)
    resumed.load_state_dicts(checkpoint.resolve(str(tmp_path)))
    torch.set_rng_state(rng)
    for s, b in enumerate(batches[2:], start=2):
        resumed.step(b, s, 0)
    want, got = straight.state_dicts(), resumed.state_dicts()
    averages = [p for p in want if p.startswith(("phema_", "ema_"))]
    assert sorted(averages) == ["ema_0.9_", "ema_kimg0.01_", "phema_0.05_", "phema_0.1_"]
    for prefix in averages:
        for k in want[prefix]:
            assert torch.equal(want[prefix][k], got[prefix][k]), f"{prefix} {k}"
    assert resumed.trainer_state()["phema"] == straight.trainer_state()["phema"] == {
        "nimg": 24, "sigma_rel": [0.05, 0.1]}


def test_samplers_take_a_posthoc_folder_through_its_recorded_weights(tmp_path):
    """gans, ddgan and improved_diffusion resolve a post-hoc folder to its reconstructed file."""
    from ddgan import sample as ddgan_sample
    from gans import script_util as gans_util
    from improved_diffusion import cli

    track(tmp_path / "run", trajectory()[:60])
    posthoc_ema.main([str(tmp_path / "run"), "--sigma_rel", "0.08", "--out", str(tmp_path / "out")])
    folder = str(tmp_path / "out" / "sigma_rel_0.08")
    want = os.path.join(folder, "ema_posthoc0.08_000060.pt")
    assert gans_util.generator_path(folder) == want
    ck = checkpoint.resolve(folder)
    assert ddgan_sample.pick_weights(ck, "auto") == ("ema_posthoc0.08_", want)
    assert ddgan_sample.pick_weights(ck, "ema", ema_decay=0.9999) == ("ema_posthoc0.08_", want)
    assert cli.resolve_model_file(folder) == want


@pytest.mark.slow
def test_a_gans_run_with_ema_std_samples_with_the_reconstructed_weights(tmp_path, digits):
    """gans.train --ema_std with snapshots, trainkit.posthoc_ema, then gans.sample on the folder:
    the npz is the reconstructed generator's images (not the raw generator's)."""
    run_dir = tmp_path / "run"
    proc = helpers.py("gans.train", "--model", "dcgan", "--data_dir", digits(8), "--image_size", "8",
                      "--num_channels", "1", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch_size", "16",
                      "--max_steps", "12", "--save_interval", "12", "--ema_std", "0.05,0.1",
                      "--ema_snapshot_interval", "3", "--grid_size", "4", "--logdir", run_dir)
    assert proc.returncode == 0, helpers.describe(proc)
    assert posthoc_ema.snapshot_steps(str(run_dir)) == [3, 6, 9, 12]
    # the run's own sampling weights are its first profile
    assert checkpoint.resolve(str(run_dir)).state["sample_weights"] == "phema_0.05_"
    proc = helpers.py("trainkit.posthoc_ema", run_dir, "--sigma_rel", "0.2", "--out", tmp_path / "ph")
    assert proc.returncode == 0, helpers.describe(proc)
    folder = tmp_path / "ph" / "sigma_rel_0.2"
    proc = helpers.py("gans.sample", "--model_path", folder, "--num_samples", "6", "--logdir", tmp_path / "s")
    assert proc.returncode == 0, helpers.describe(proc)
    images = np.load(tmp_path / "s" / "samples_6x8x8x1.npz")["arr_0"]

    from gans import script_util
    from trainkit import npz, sampling

    def draw(path):
        G, _ = script_util.load_generator(str(path))
        rnd = sampling.PerSampleRandom(0, range(6), "cpu")
        with torch.no_grad():
            return npz.to_uint8(G(rnd.randn(G.nz, 1, 1)).float())

    assert np.array_equal(images, draw(folder / "ema_posthoc0.2_000012.pt"))
    assert not np.array_equal(images, draw(run_dir / "model000012.pt"))


@pytest.mark.slow
def test_improved_diffusion_profiles_resume_bit_exactly_and_reconstruct(tmp_path, digits):
    """improved_diffusion.train --ema_std: 4 steps straight and 2 + a resumed 2 leave the same
    profile files; the post-hoc folder is what improved_diffusion's sampler resolves."""
    from _support.flags import ID_FLAGS as FLAGS
    from _support.flags import ID_TINY as TINY
    from improved_diffusion import cli

    def train(run_dir, steps, *extra):
        proc = helpers.launch("local", 1, "improved_diffusion.train", "--data_dir", digits(8), "--logdir", run_dir,
                              *TINY, "--max_steps", steps, "--save_interval", 2, "--ema_std", "0.05,0.1",
                              "--ema_snapshot_interval", 1, *extra, flag_files=[FLAGS])
        assert proc.returncode == 0, helpers.describe(proc)

    train(tmp_path / "straight", 4)
    train(tmp_path / "split", 2)
    train(tmp_path / "split", 4, "--resume_checkpoint", "auto")
    a, b = (checkpoint.resolve(str(tmp_path / d)) for d in ("straight", "split"))
    assert a.step == b.step == 4 and a.state["phema"] == b.state["phema"] == {"nimg": 16, "sigma_rel": [0.05, 0.1]}
    for prefix in ("phema_0.05_", "phema_0.1_"):
        sa, sb = a.load(prefix), b.load(prefix)
        assert all(torch.equal(sa[k], sb[k]) for k in sa), prefix
    # the 0.9999 EMA has not settled after 4 steps: the run samples its first profile
    assert a.state["sample_weights"] == "phema_0.05_"
    assert posthoc_ema.snapshot_steps(str(tmp_path / "split")) == [1, 2, 3, 4]
    assert posthoc_ema.main([str(tmp_path / "split"), "--sigma_rel", "0.12", "--out", str(tmp_path / "ph")]) == 0
    folder = tmp_path / "ph" / "sigma_rel_0.12"
    assert cli.resolve_model_file(str(folder)) == str(folder / "ema_posthoc0.12_000004.pt")
