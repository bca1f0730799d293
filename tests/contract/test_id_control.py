"""Control of improved_diffusion: DDIM inversion, partial decoding (SDEdit), interpolation in x_T.

The math against the closed-form Gaussian (mixture) eps oracle of test_id_samplers; the entry
points (improved_diffusion.interpolate, improved_diffusion.edit) on a tiny model trained 2 steps,
in-process, their endpoints against improved_diffusion.sample's own samples."""

import json
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from _support.entry import main_in_process
from _support.flags import ID_FLAGS as FLAGS
from _support.flags import ID_TINY as TINY
from _support.oracles import GAUSS, MIXTURE, OVERLAPPING, SHAPE, MixtureOracle, make_diffusion, rms
from improved_diffusion import control, edit, interpolate, sample, samplers


def data_samples(spec, n, seed):
    """n draws of the oracle's data distribution, shaped (n, *SHAPE), float64."""
    g = torch.Generator().manual_seed(seed)
    means, stds = torch.tensor(spec["means"], dtype=torch.float64), torch.tensor(spec["stds"], dtype=torch.float64)
    k = torch.multinomial(torch.tensor(spec["weights"], dtype=torch.float64), n, replacement=True, generator=g)
    x = means[k] + stds[k, None] * torch.randn(n, means.shape[1], generator=g, dtype=torch.float64)
    return x.reshape(n, *SHAPE)


def corr(a, b):
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


# ----- the math -----------------------------------------------------------------------------

@pytest.mark.parametrize("spec,schedule", [(GAUSS, "uniform"), (OVERLAPPING, "logsnr")])
def test_ddim_inversion_then_decoding_returns_the_input_ever_closer(spec, schedule):
    d = make_diffusion()
    x0 = data_samples(spec, 64, seed=1)
    errors = []
    for steps in (40, 80, 160):
        oracle = MixtureOracle(d, **spec)
        x_T = samplers.invert(oracle, d, x0, steps, schedule, clip_denoised=False)
        assert oracle.calls == steps  # as many model evaluations as the decode
        back = samplers.sample_loop(oracle, d, x_T, sampler="ddim", steps=steps, time_schedule=schedule,
                                    clip_denoised=False)
        errors.append(rms(back, x0))
    print(f"\nround trip rms error at 40, 80, 160 steps: {errors}")
    assert all(b < 0.6 * a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.03, errors
    assert rms(x_T, torch.zeros_like(x_T)) > 0.5  # x_T is noise-sized, not the data


def test_inversion_of_gaussian_data_is_the_exact_ode_map():
    """For N(m, s^2) data the probability-flow ODE maps x0 to alpha_T m + sqrt(v_T) (x0 - m) / s
    at the noisiest point (v_T = alpha_T^2 s^2 + sigma_T^2): nearly a standard normal."""
    d = make_diffusion()
    m, s = GAUSS["means"][0][0], GAUSS["stds"][0]
    x0 = data_samples(GAUSS, 256, seed=2)
    levels = samplers.NoiseLevels(d)
    a_T, s_T = levels.alpha_sigma(levels.lambda_min)
    exact = a_T * m + (a_T**2 * s**2 + s_T**2) ** 0.5 * (x0 - m) / s
    x_T = samplers.invert(MixtureOracle(d, **GAUSS), d, x0, 200, "uniform", clip_denoised=False)
    assert rms(x_T, exact) < 0.02 * rms(exact, torch.zeros_like(exact))


def test_partial_time_points_and_a_start_at_the_top_change_nothing():
    d = make_diffusion()
    levels = samplers.NoiseLevels(d)
    for schedule in samplers.TIME_SCHEDULES:
        ts, lams = samplers.time_points(levels, 6, schedule, t_start=400.5)
        assert ts[0] == 400.5 and ts[-1] == 0 and (np.diff(ts) < 0).all() and lams[0] == levels.lam(400.5)
        np.testing.assert_allclose(levels.lam(ts), lams, rtol=1e-9, atol=1e-9)
        whole = samplers.time_points(levels, 6, schedule)
        top = samplers.time_points(levels, 6, schedule, t_start=levels.t_max)
        np.testing.assert_array_equal(whole[0], top[0])
    with pytest.raises(ValueError, match="outside the timesteps"):
        samplers.time_points(levels, 3, "uniform", t_start=1000)
    x = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for sampler in samplers.ODE_SAMPLERS:
        full = samplers.sample_loop(MixtureOracle(d, **MIXTURE), d, x, sampler=sampler, steps=5, clip_denoised=False)
        started = samplers.sample_loop(MixtureOracle(d, **MIXTURE), d, x, sampler=sampler, steps=5,
                                       clip_denoised=False, t_start=levels.t_max)
        assert torch.equal(full, started), sampler
        # SDEdit from t0 = 1 is the sampler from alpha_T x0 + sigma_T eps
        a_T, s_T = levels.alpha_sigma(levels.lambda_min)
        edited = samplers.sdedit(MixtureOracle(d, **MIXTURE), d, x, eps, 1.0, sampler=sampler, steps=5,
                                 clip_denoised=False)
        plain = samplers.sample_loop(MixtureOracle(d, **MIXTURE), d, a_T * x + s_T * eps, sampler=sampler, steps=5,
                                     clip_denoised=False)
        torch.testing.assert_close(edited, plain, rtol=0, atol=1e-12)
    assert [samplers.sdedit_steps(20, t) for t in (0.01, 0.25, 0.5, 1.0)] == [1, 5, 10, 20]
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        samplers.sdedit_start(d, 1.5)


def test_sdedit_keeps_the_input_at_small_t0_and_forgets_it_at_t0_1():
    d = make_diffusion()
    n = 4096
    x0 = data_samples(GAUSS, n, seed=5)
    eps = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    results = {}
    for t0 in (0.02, 0.25, 0.5, 1.0):
        out = samplers.sdedit(MixtureOracle(d, **GAUSS), d, x0, eps, t0, sampler="ddim", steps=20,
                              clip_denoised=False)
        results[t0] = (rms(out, x0), corr(out, x0))
    print("\nSDEdit (rms error, correlation) by t0: " + ", ".join(f"{t}: ({e:.3f}, {c:.3f})"
                                                                for t, (e, c) in results.items()))
    assert results[0.02][0] < 0.1 and results[0.02][1] > 0.9, results
    assert abs(results[1.0][1]) < 0.1, results
    corrs = [c for _, c in results.values()]
    assert all(b < a for a, b in zip(corrs, corrs[1:])), results  # the more noise, the less of the input


def test_interpolation_rows_end_exactly_at_their_ends_and_slerp_keeps_the_norm():
    a, b = (torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    for method in ("lerp", "slerp"):
        row = control.interpolation_row(a, b, 5, method)
        assert row.shape == (5, 1, 16, 16) and torch.equal(row[0], a) and torch.equal(row[-1], b)
    mid_slerp, mid_lerp = control.slerp(a, b, 0.5), control.lerp(a, b, 0.5)
    typical = ((a.norm() ** 2 + b.norm() ** 2) / 2).sqrt()  # nearly orthogonal Gaussian draws
    assert abs(mid_slerp.norm() / typical - 1) < 0.05 and mid_lerp.norm() < 0.8 * typical
    x_T, pinned = interpolate.interpolation_x_T([a, b, a], 4, ["lerp", "slerp"])
    assert x_T.shape == (16, 1, 16, 16) and pinned == [0, 3, 4, 7, 8, 11, 12, 15]
    indices = control.pinned_indices(16, pinned)
    assert len(set(indices)) == 16 and all(indices[k] % sample.SAMPLE_BLOCK == 0 for k in pinned)
    assert sum(i % sample.SAMPLE_BLOCK == 0 for i in indices) == len(pinned)  # the others fill rows 1..7


# ----- the command line ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(trained_run):
    assert "--class_cond" in TINY  # labels go through inversion, interpolation and SDEdit
    return trained_run("id_cond")  # conftest.RUN_RECIPES: test_id_train.TINY, 2 steps


def grid_shape(png, size=16, pad=2):
    """(rows, columns) of a grid of size-px images laid out as torchvision's make_grid."""
    with Image.open(png) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert (w - pad) % (size + pad) == 0 and (h - pad) % (size + pad) == 0, (w, h)
    return (h - pad) // (size + pad), (w - pad) // (size + pad)


def test_interpolate_ends_are_the_samplers_samples_and_images_invert(tiny_run, digits, tmp_path, monkeypatch,
                                                                     capsys):
    out = tmp_path / "grid.png"
    code, err = main_in_process(interpolate, ["--model_path", tiny_run, "--seeds", "3,5", "--num_steps", 4, "--method",
                                              "both", "--steps", 4, "--class_label", 2, "--out", out, "--logdir",
                                              tmp_path / "i"], monkeypatch, capsys)
    assert code == 0, err
    assert grid_shape(out) == (2, 4)  # one pair x (lerp, slerp)
    with np.load(tmp_path / "grid.npz") as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.shape == (8, 16, 16, 1) and images.dtype == np.uint8 and (labels == 2).all()
    assert json.loads((tmp_path / "i" / "options.json").read_text())["_run"]["role"] == "interpolation"
    for seed, ends in ((3, [0, 4]), (5, [3, 7])):
        s = tmp_path / f"s{seed}"
        code, err = main_in_process(sample, ["--model_path", tiny_run, "--seed", seed, "--num_samples", 1, "--sampler",
                                             "ddim", "--steps", 4, "--class_labels", 2, "--logdir", s],
                                    monkeypatch, capsys)
        assert code == 0, err
        with np.load(s / "samples_1x16x16x1.npz") as f:
            for k in ends:
                np.testing.assert_array_equal(images[k], f["arr_0"][0])
    assert not np.array_equal(images[1], images[5])  # lerp and slerp differ inside the row

    # --from_images: an image folder's images 0, 1, 2 inverted, two rows
    code, err = main_in_process(interpolate, ["--model_path", tiny_run, "--from_images", digits(16, "test"), "--pairs",
                                              "0,1,2", "--num_steps", 3, "--steps", 4, "--logdir", tmp_path / "f"],
                                monkeypatch, capsys)
    assert code == 0, err
    assert grid_shape(tmp_path / "f" / "interpolation.png") == (2, 3)
    with np.load(tmp_path / "f" / "interpolation.npz") as f:
        assert f["arr_0"].shape == (6, 16, 16, 1)
        np.testing.assert_array_equal(f["arr_0"][2], f["arr_0"][3])  # image 1 ends row 1 and starts row 2


def test_edit_writes_the_input_row_then_one_row_per_t0(tiny_run, digits, tmp_path, monkeypatch, capsys):
    out = tmp_path / "edit.png"
    code, err = main_in_process(edit, ["--model_path", tiny_run, "--images", digits(16, "test"), "--num_images", 3,
                                       "--t0", "0.5,1.0", "--steps", 4, "--out", out, "--logdir", tmp_path / "e"],
                                monkeypatch, capsys)
    assert code == 0, err
    assert grid_shape(out) == (3, 3)  # input, t0 = 0.5, t0 = 1
    with np.load(tmp_path / "edit.npz") as f:
        assert f["arr_0"].shape == (6, 16, 16, 1) and f["arr_0"].dtype == np.uint8
        assert f["arr_1"].shape == (6,)  # the folder's labels (file-name classes), once per t0 row
    with Image.open(out) as im:  # the first row is the input, as written
        first = np.asarray(im.convert("L"))[2:18, 2:18]
    with Image.open(sorted(digits(16, "test").iterdir())[0]) as im:
        np.testing.assert_array_equal(first, np.asarray(im.convert("L")))


@pytest.mark.parametrize("module,argv,message", [
    (edit, ["--t0", "1.5"], "--t0 1.5: each value must be in (0, 1]"),
    (edit, ["--t0", "0,0.5"], "--t0 0: each value must be in (0, 1]"),
    (interpolate, ["--seeds", "1"], "--seeds '1': need at least two seeds"),
    (interpolate, ["--class_label", "10"], "--class_label 10: outside the model's classes 0..9"),
    (interpolate, ["--timestep_respacing", "10"], "give --steps N instead"),
])
def test_bad_input_is_one_line_and_writes_nothing(module, argv, message, tiny_run, digits, tmp_path, monkeypatch,
                                                  capsys):
    extra = ["--images", digits(16, "test")] if module is edit else []
    code, err = main_in_process(module, ["--model_path", tiny_run, "--logdir", tmp_path / "x", *extra, *argv],
                                monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x").exists()


def flag_file_words(role):
    """The flags launch/run.sh gives MODULE.<role> from digits_tiny.sh: $MODEL_FLAGS
    $DIFFUSION_FLAGS $<ROLE>_FLAGS, split as the shell splits them (run in-process here: the
    launcher's role lookup has its own tests in test_trainkit_cli)."""
    proc = subprocess.run(["bash", "-c", 'source "$1"; v="$2"; printf "%s\\n" $MODEL_FLAGS $DIFFUSION_FLAGS ${!v}', "_",
                           FLAGS, f"{role.upper()}_FLAGS"], capture_output=True, text=True, check=True)
    return proc.stdout.split()


def test_the_flag_file_drives_both_entry_points(tiny_run, digits, tmp_path, monkeypatch, capsys):
    """$INTERPOLATE_FLAGS (3 seeds x 8 images) and $EDIT_FLAGS (4 values of t0) of digits_tiny.sh;
    --diffusion_steps 50 is the tiny run's, --steps 2 keeps it short."""
    common = ["--model_path", tiny_run, "--diffusion_steps", "50", "--steps", "2"]
    for module, extra, shape in ((interpolate, [], (2, 8)),
                                 (edit, ["--images", digits(16, "test"), "--num_images", "2"], (5, 2))):
        role = module.__name__.rsplit(".", 1)[1]
        out = tmp_path / role
        code, err = main_in_process(module, [*flag_file_words(role), *common, *extra, "--logdir", out],
                                    monkeypatch, capsys)
        assert code == 0, err
        assert grid_shape(next(out.glob("*.png"))) == shape, role
