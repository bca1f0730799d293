"""v-prediction (Salimans & Ho 2022) and min-SNR-gamma weighting (Hang et al. 2023) beside openai's
eps / x0 / hybrid losses: the target and the weights against their closed forms at chosen t, a
v-model's conversions, every sampler and the bound on a v-model, and the flags read back from a
run directory. Closed forms use float64 tables computed here from the betas, not the diffusion's."""

import json

import numpy as np
import pytest
import torch

import helpers
from _support.flags import ID_FLAGS as FLAGS
from _support.flags import ID_TINY as TINY
from _support.oracles import MIXTURE, SHAPE, MixtureOracle, make_diffusion
from improved_diffusion import gaussian_diffusion as gd
from improved_diffusion import samplers
from improved_diffusion.cli import apply_saved_model_flags
from improved_diffusion.nn import mean_flat
from improved_diffusion.sample import create_argparser as sample_parser
from improved_diffusion.train import create_argparser as train_parser
from improved_diffusion.train import create_model_and_diffusion_checked
from trainkit.errors import UserError

T = 100
CHOSEN_T = [0, 3, 20, 50, 80, 99]  # SNR from ~1e4 (above any gamma) to ~1e-5 (below)


def abar(schedule="cosine", steps=T):
    return np.cumprod(1.0 - gd.get_named_beta_schedule(schedule, steps))


class ZeroModel:
    """Outputs zeros: the MSE is then the mean square of the target itself."""

    def __call__(self, x, t, **kwargs):
        return torch.zeros_like(x)


def data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 3, 3, generator=g, dtype=torch.float64) * 1.6 - 0.8, \
        torch.randn(n, 1, 3, 3, generator=g, dtype=torch.float64)


def test_v_target_at_chosen_t_and_the_conversions_round_trip():
    d = make_diffusion(T=T, predict_v=True)
    assert d.model_mean_type == gd.ModelMeanType.V
    a = abar()
    x0, eps = data(len(CHOSEN_T))
    t = torch.tensor(CHOSEN_T)
    alpha = torch.from_numpy(np.sqrt(a[CHOSEN_T])).reshape(-1, 1, 1, 1)
    sigma = torch.from_numpy(np.sqrt(1 - a[CHOSEN_T])).reshape(-1, 1, 1, 1)
    v = d._predict_v(x0, t, eps)
    torch.testing.assert_close(v, alpha * eps - sigma * x0, rtol=0, atol=1e-6)  # the tables are cast to float32
    x_t = d.q_sample(x0, t, noise=eps)
    torch.testing.assert_close(d._predict_xstart_from_v(x_t, t, v), x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(d._predict_eps_from_v(x_t, t, v), eps, rtol=0, atol=1e-5)
    # through the model path: a v-model outputting the true v predicts x0 and the posterior mean
    out = d.p_mean_variance(lambda x, ts: v, x_t, t, clip_denoised=False)
    torch.testing.assert_close(out["pred_xstart"], x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(d._predict_eps_from_xstart(x_t, t, out["pred_xstart"]), eps, rtol=0, atol=1e-3)


def test_the_training_target_of_a_v_model_is_v():
    d = make_diffusion(T=T, predict_v=True)
    x0, eps = data(len(CHOSEN_T), seed=1)
    t = torch.tensor(CHOSEN_T)
    a = abar()[CHOSEN_T].reshape(-1, 1, 1, 1)
    v = torch.from_numpy(np.sqrt(a)) * eps - torch.from_numpy(np.sqrt(1 - a)) * x0
    got = d.training_losses(ZeroModel(), x0, t, noise=eps)
    torch.testing.assert_close(got["loss"], mean_flat(v**2), rtol=1e-5, atol=0)


def min_snr_weight(snr, gamma, kind):
    return {"eps": min(snr, gamma) / snr, "v": min(snr, gamma) / (snr + 1), "xstart": min(snr, gamma)}[kind]


@pytest.mark.parametrize("kind", ["eps", "v", "xstart"])
@pytest.mark.parametrize("respacing", ["", "10"])
def test_min_snr_weights_at_chosen_t(kind, respacing):
    """loss(t) = w(t) * mean((target - 0)^2) with w the paper's closed form at SNR = abar/(1-abar);
    respaced, t counts the kept steps and abar is the base process's at timestep_map[t]."""
    gamma = 5.0
    flags = {"eps": {}, "v": {"predict_v": True}, "xstart": {"predict_xstart": True}}[kind]
    d = make_diffusion(T=T, snr_gamma=gamma, timestep_respacing=respacing, **flags)
    base_t = np.array(CHOSEN_T if not respacing else sorted(d.timestep_map))
    t = torch.arange(len(base_t)) if respacing else torch.tensor(CHOSEN_T)
    a = abar()[base_t]
    snr = a / (1 - a)
    assert snr.max() > gamma > snr.min()  # both sides of the clip are tested
    weights = np.array([min_snr_weight(s, gamma, kind) for s in snr])
    np.testing.assert_allclose(d.mse_weights()[t.numpy()], weights, rtol=1e-9)  # respaced abar: products of ratios
    x0, eps = data(len(t), seed=2)
    a4 = a.reshape(-1, 1, 1, 1)
    v = torch.from_numpy(np.sqrt(a4)) * eps - torch.from_numpy(np.sqrt(1 - a4)) * x0
    target = {"eps": eps, "xstart": x0, "v": v}
    got = d.training_losses(ZeroModel(), x0, t, noise=eps)
    torch.testing.assert_close(got["loss"], torch.from_numpy(weights) * mean_flat(target[kind] ** 2), rtol=1e-5, atol=0)


def test_without_snr_gamma_the_loss_is_openais_bit_for_bit():
    d = make_diffusion(T=T)
    assert d.snr_gamma == 0 and d.mse_weights() is None
    x0, eps = data(6, seed=3)
    t = torch.tensor(CHOSEN_T)
    oracle = MixtureOracle(d, **{"means": [[0.1] * 9], "stds": [0.5], "weights": [1.0]})
    outputs = []

    def model(x, ts):
        outputs.append(oracle(x, ts))
        return outputs[-1]
    got = d.training_losses(model, x0, t, noise=eps)
    assert torch.equal(got["loss"], mean_flat((eps - outputs[0].float()) ** 2))


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_each_sampler_runs_a_v_model_as_the_eps_model(sampler):
    """The mixture oracle's E[v | x_t] against its E[eps | x_t]: the same samples."""
    steps = 6
    # ddpm goes through float32 tables: on the cosine schedule 1/alpha_T ~ 1e4 makes the eps path's
    # x0 off by ~1e-3 (float32 rounding), so it runs on the linear one (1/alpha_T ~ 160)
    spec = dict(timestep_respacing=str(steps), schedule="linear") if sampler == "ddpm" else {}
    d, dv = make_diffusion(**spec), make_diffusion(predict_v=True, **spec)
    x_T = torch.randn(32, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def run(diffusion, predict):
        g = torch.Generator().manual_seed(5)
        return samplers.sample_loop(MixtureOracle(diffusion, **MIXTURE, predict=predict), diffusion, x_T.clone(),
                                    sampler=sampler, steps=steps, clip_denoised=False,
                                    noise_fn=lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype))

    ref, got = run(d, "eps"), run(dv, "v")
    # ODE samplers convert in float64; the ancestral sampler through float32 tables
    tol = 1e-4 if sampler == "ddpm" else 1e-9
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    assert (ref - x_T).abs().max() > 0.1  # the samples moved: a real comparison


def test_the_bound_of_a_v_model_is_the_eps_models():
    T_ = 20
    d, dv = make_diffusion(T=T_), make_diffusion(T=T_, predict_v=True)
    x0 = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(6)) * 1.6 - 0.8

    def bpd(diffusion, predict):
        g = torch.Generator().manual_seed(7)
        return diffusion.calc_bpd_loop(MixtureOracle(diffusion, **MIXTURE, predict=predict), x0, clip_denoised=False,
                                       noise_fn=lambda like: torch.randn(like.shape, generator=g))

    ref, got = bpd(d, "eps"), bpd(dv, "v")
    for key in ("total_bpd", "vb", "mse", "xstart_mse"):
        torch.testing.assert_close(got[key], ref[key], rtol=1e-3, atol=1e-4)


def checked(*argv):
    return create_model_and_diffusion_checked(train_parser().parse_args(["--data_dir", "D", *argv]))


def test_contradictory_loss_flags_are_one_line_errors():
    with pytest.raises(UserError, match="--predict_v True and --predict_xstart True"):
        checked("--predict_v", "True", "--predict_xstart", "True", "--image_size", "32")
    with pytest.raises(UserError, match="--snr_gamma weights the MSE term, and --use_kl True"):
        checked("--snr_gamma", "5", "--use_kl", "True", "--image_size", "32")
    with pytest.raises(SystemExit):  # parse time: out of range
        train_parser().parse_args(["--snr_gamma", "-1"])


@pytest.mark.slow
def test_a_v_model_trains_and_samples_from_its_options_alone(digits, tmp_path):
    """--predict_v True --snr_gamma 5 recorded in options.json; sample.py given the run directory
    alone rebuilds a v-model (and its weighting) and samples it with an ODE solver."""
    run_dir = tmp_path / "v"
    proc = helpers.launch("local", 1, "improved_diffusion.train", "--data_dir", digits(16), "--logdir", run_dir, *TINY,
                          "--predict_v", "True", "--snr_gamma", "5", "--max_steps", "3", "--save_interval", "3",
                          flag_files=[FLAGS])
    assert proc.returncode == 0, helpers.describe(proc)
    options = json.loads((run_dir / "options.json").read_text())
    assert options["predict_v"] is True and options["snr_gamma"] == 5.0
    args = sample_parser().parse_args(["--model_path", str(run_dir)])
    apply_saved_model_flags(args, options, ["--model_path", str(run_dir)])
    _, diffusion = create_model_and_diffusion_checked(args)
    assert diffusion.model_mean_type == gd.ModelMeanType.V and diffusion.snr_gamma == 5.0
    out = tmp_path / "s"
    proc = helpers.launch("local", 1, "improved_diffusion.sample", "--model_path", run_dir, "--logdir", out,
                          "--num_samples", "2", "--sampler", "dpmpp_2m", "--steps", "3")
    assert proc.returncode == 0, helpers.describe(proc)
    assert json.loads((out / "options.json").read_text())["predict_v"] is True
    with np.load(out / "samples_2x16x16x1.npz") as f:
        assert f["arr_0"].shape == (2, 16, 16, 1)
