"""The fully connected GAN and cGAN (gans/fcgan.py, seed 002): any image size, the label reaches
both networks' first layer as a one-hot vector, the architecture reads back from a bare file, and
the family's runtime (train, resume, sample, interpolate) works for them. One subprocess."""

import shlex
import subprocess

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import helpers
from _support.entry import main_in_process
from gans import dcgan, fcgan, interpolate, models, sample, sync_bn, train
from gans.trainer import GANTrainer
from trainkit import checkpoint, run
from trainkit.errors import UserError


def _linears(m):
    return [x for x in m.modules() if isinstance(x, nn.Linear)]


@pytest.mark.parametrize("model", ["gan", "cgan"])
@pytest.mark.parametrize("image_size,channels", [(28, 1), (20, 3), (7, 1)])
def test_any_image_size_and_the_file_tells_the_architecture(model, image_size, channels):
    torch.manual_seed(0)
    G, D = models.create_models(model, image_size, nz=6, ngf=3, ndf=2, channels=channels, num_classes=4)
    y = torch.tensor([0, 1, 2, 3, 1]) if model == "cgan" else None
    z = torch.randn(5, 6)
    x = G(z, y)
    assert x.shape == (5, channels, image_size, image_size)
    assert x.abs().max() <= 1 and x.std() > 0  # tanh output, not constant
    assert torch.equal(G(z[:, :, None, None], y), x)  # what the trainer and samplers pass
    assert D(x, y).shape == (5,)
    sd = G.state_dict()
    cfg = models.generator_config(sd, "g.pt")
    assert cfg == {"model": model, "image_size": image_size, "nz": 6, "ngf": 3, "channels": channels,
                   "num_classes": 4 if model == "cgan" else 0}
    G2 = models.build_generator(cfg)
    models.load_generator_state(G2, sd, "g.pt")
    assert type(G2) is fcgan.FCGenerator and torch.equal(G2(z, y), x)


def test_seed_002_widths_and_no_normalisation():
    G, D = models.create_models("gan", 28, nz=100, ngf=64, ndf=64, channels=1)
    assert [tuple(m.weight.shape) for m in _linears(G)] == [(256, 100), (512, 256), (1024, 512), (784, 1024)]
    assert [tuple(m.weight.shape) for m in _linears(D)] == [(1024, 784), (512, 1024), (256, 512), (1, 256)]
    for net in (G, D):
        acts = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
        assert len(acts) == 3 and all(a.negative_slope == 0.2 for a in acts)
        assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)) for m in net.modules())
    assert isinstance(G.net[-1], nn.Tanh)
    # PyTorch's default Linear init: uniform with bound 1/sqrt(fan_in), per layer
    for m in _linears(G):
        bound = m.weight.shape[1] ** -0.5
        assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.95 * bound
    assert sorted(G.state_dict()) == ["classes", "image_shape"] + [f"net.{i}.{p}" for i in (0, 2, 4, 6)
                                                                    for p in ("bias", "weight")]
    assert sorted(D.state_dict()) == ["classes", "head.bias", "head.weight", "image_shape"] + [
        f"net.{i}.{p}" for i in (0, 2, 4) for p in ("bias", "weight")]
    assert G.image_shape.tolist() == [1, 28, 28] and int(G.classes) == 0


def test_cgan_label_enters_as_a_one_hot_beside_z_and_the_flat_image():
    torch.manual_seed(0)
    G, D = models.create_models("cgan", 9, nz=5, ngf=2, ndf=2, channels=1, num_classes=3)
    z, y = torch.randn(4, 5), torch.tensor([0, 2, 1, 2])
    seen = {}  # clones: the in-place LeakyReLU that follows rewrites the layer's output tensor
    G.net[0].register_forward_hook(lambda m, i, o: seen.__setitem__("g", (i[0].clone(), o.clone())))
    D.net[0].register_forward_hook(lambda m, i, o: seen.__setitem__("d", (i[0].clone(), o.clone())))
    with torch.no_grad():
        x = G(z, y)
        D(x, y)
    onehot = torch.eye(3)[y]
    g_in, g_out = seen["g"]
    assert torch.equal(g_in, torch.cat([z, onehot], dim=1))
    # by hand from the first layer's weights: z's columns plus the label's own column, then the rest
    W, b = G.net[0].weight, G.net[0].bias
    manual = z @ W[:, :5].T + W[:, 5 + y].T + b
    assert torch.allclose(g_out, manual, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(G.net[1:](manual).view(4, 1, 9, 9), x, atol=1e-6)
    d_in, _ = seen["d"]
    assert torch.equal(d_in, torch.cat([x.flatten(1), onehot], dim=1))
    # only the label changes: every image and every logit changes
    with torch.no_grad():
        x_other = G(z, (y + 1) % 3)
        assert (x_other - x).flatten(1).abs().amax(dim=1).min() > 0
        assert not torch.isclose(D(x, (y + 1) % 3), D(x, y)).any()


def test_label_and_input_errors():
    G, D = models.create_models("cgan", 8, nz=4, ngf=2, ndf=2, channels=1, num_classes=3)
    with pytest.raises(UserError, match="class label 3 outside the model's classes 0..2"):
        G(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(UserError, match="needs class labels"):
        D(torch.zeros(2, 1, 8, 8))
    with pytest.raises(UserError, match=r"expected \(1, 8, 8\)"):
        D(torch.zeros(2, 1, 9, 9), torch.tensor([0, 1]))
    with pytest.raises(UserError, match=r"latent of shape \(2, 5\)"):
        G(torch.randn(2, 5), torch.tensor([0, 1]))
    Gu, _ = models.create_models("gan", 8, nz=4, ngf=2, ndf=2, channels=1, num_classes=3)
    assert Gu.num_classes == 0
    with pytest.raises(UserError, match="unconditional.*--model cgan"):
        Gu(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(UserError, match="--model cgan needs labelled data with at least 2 classes"):
        models.create_models("cgan", 8, num_classes=1)
    for size in (0, "28", True):
        with pytest.raises(UserError, match="--image_size .*positive integer"):
            models.create_models("gan", size)
    with pytest.raises(UserError, match="--model 'wgan': choose one of dcgan, cdcgan, gan, cgan"):
        models.create_models("wgan", 8)


def test_a_file_of_another_kind_is_one_line_naming_it():
    small = dict(nz=4, ngf=2, ndf=2, channels=1)
    G_gan, D_gan = models.create_models("gan", 8, **small)
    G_cgan, D_cgan = models.create_models("cgan", 8, num_classes=3, **small)
    G_dc, D_dc = models.create_models("dcgan", 8, **small)
    load_g, load_d = models.load_generator_state, models.load_discriminator_state
    cases = [
        (load_g, G_cgan, G_gan, "m.pt: checkpoint holds a gan generator, but --model is cgan"),
        (load_g, G_dc, G_gan, "m.pt: checkpoint holds a gan generator, but --model is dcgan"),
        (load_g, G_gan, G_dc, "m.pt: checkpoint holds a dcgan generator, but --model is gan"),
        (load_d, D_gan, D_cgan, "m.pt: checkpoint holds a cgan discriminator, but --model is gan"),
        (load_d, D_dc, D_gan, "m.pt: checkpoint holds a gan discriminator, but --model is dcgan"),
        (load_g, G_gan, D_gan, "m.pt: not a DCGAN generator state_dict"),
    ]
    for load, into, source, message in cases:
        with pytest.raises(UserError) as e:
            load(into, source.state_dict(), "m.pt")
        assert str(e.value).startswith(message) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="m.pt: not a DCGAN generator"):  # the dcgan-only loader too
        dcgan.load_generator_state(G_dc, G_gan.state_dict(), "m.pt")
    G_wide, _ = models.create_models("gan", 8, **{**small, "ngf": 3})
    with pytest.raises(UserError, match=r"m.pt: generator weights do not fit .*net.0.weight \(12, 4\) vs \(8, 4\)"):
        models.load_generator_state(G_gan, G_wide.state_dict(), "m.pt")
    # same tensor shapes (4 outputs), other image: the buffers are compared by value
    with pytest.raises(UserError, match=r"m.pt: generator was built for image_shape \[4, 1, 1\]"):
        fcgan.load_state(fcgan.FCGenerator(2, 4, 2, 1), fcgan.FCGenerator(1, 4, 2, 4).state_dict(), "m.pt")


def test_minibatch_std_and_sync_bn_on_the_fc_models():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 6, 6) * 2 - 1
    copies = x[:1].repeat(4, 1, 1, 1)
    for on in (True, False):
        _, D = models.create_models("gan", 6, nz=4, ngf=2, ndf=2, channels=1, minibatch_std=on)
        assert D.head.in_features == 8 + on
        nn.init.normal_(D.head.weight)
        with torch.no_grad():
            varied, same = D(x)[0], D(copies)[0]
        assert (not torch.isclose(varied, same)) if on else torch.isclose(varied, same)
    # --sync_bn: a model without BatchNorm comes back as it was, on either conversion path
    for device in ("cpu", "cuda"):
        G, _ = models.create_models("cgan", 6, nz=4, ngf=2, ndf=2, channels=1, num_classes=2)
        before = [type(m) for m in G.modules()]
        assert sync_bn.convert(G, torch.device(device)) is G and [type(m) for m in G.modules()] == before


def test_a_cgan_checkpoint_is_refused_by_a_gan_trainer(tmp_path):
    """Resume round trips of every kind: tests/contract/test_task_contract.py. Here: the kind is checked."""
    torch.manual_seed(0)
    G, D = models.create_models("cgan", 6, nz=4, ngf=2, ndf=2, channels=1, num_classes=3)
    t = GANTrainer(G, D, device="cpu", ema_rates="0.5")
    assert t.trainer_state()["model_kind"] == "cgan"
    checkpoint.save(str(tmp_path), 1, t.state_dicts(), {"rng": run.rng_state(), "precision": t.precision_state()})
    Gu, Du = models.create_models("gan", 6, nz=4, ngf=2, ndf=2, channels=1)
    with pytest.raises(UserError, match="model000001.pt: checkpoint holds a cgan generator, but --model is gan"):
        GANTrainer(Gu, Du, device="cpu").load_state_dicts(checkpoint.resolve(str(tmp_path)))


def _flag_file(name):
    script = f'source "{helpers.ROOT}/flags/gans/{name}"; echo "$MODEL_FLAGS $TRAIN_FLAGS"; echo "$INTERPOLATE_FLAGS"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    return shlex.split(out[0]), shlex.split(out[1])


def test_flag_files_hold_seed_002s_setting():
    for name, model in (("gan_mnist28.sh", "gan"), ("cgan_mnist28.sh", "cgan")):
        train_argv, interp_argv = _flag_file(name)
        a = train.create_argparser().parse_args(train_argv)
        train.check_args(a)  # 28 px is accepted for the FC kinds
        assert (a.model, a.image_size, a.num_channels, a.nz, a.ngf, a.ndf, a.data_dir) == \
            (model, 28, 1, 100, 64, 64, "data/mnist28/train")
        assert (a.batch_size, a.epochs, a.max_steps, a.lr_g, a.lr_d, a.beta1, a.beta2, a.loss) == \
            (128, 50, 0, 2e-4, 2e-4, 0.5, 0.999, "bce")
        assert ("--class_label" in interp_argv) == (model == "cgan")
    a = train.create_argparser().parse_args(["--model", "dcgan", "--image_size", "28"])
    with pytest.raises(UserError, match="--model gan/cgan"):  # the DCGAN's refusal points at them
        train.check_args(a)


def test_cgan_at_28px_trains_resumes_samples_and_interpolates(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        label = i % 2
        im = (rng.random((28, 28)) * 60).astype(np.uint8)
        im[:, 14 * label:14 * label + 14] += 180  # class 0: left half bright, class 1: right half
        Image.fromarray(im, "L").save(data / f"{label}_{i:03d}.png")
    arch = ["--model", "cgan", "--image_size", 28, "--num_channels", 1, "--nz", 8, "--ngf", 4]
    run_dir = tmp_path / "run"
    proc = helpers.py("gans.train", *arch, "--ndf", 4, "--data_dir", data, "--batch_size", 8, "--max_steps", 2,
                      "--grid_size", 4, "--ema_rate", "0.9", "--logdir", run_dir, timeout=300)
    assert proc.returncode == 0, helpers.describe(proc)
    assert checkpoint.latest(str(run_dir)).step == 2 and (run_dir / "grid000002.png").exists()
    assert "cgan: G" in (run_dir / "log.txt").read_text()
    # resume in-process, one more step, in the same run directory
    code, err = main_in_process(train, [*arch, "--ndf", 4, "--data_dir", data, "--batch_size", 8, "--max_steps", 3,
                                        "--grid_size", 4, "--ema_rate", "0.9", "--logdir", run_dir,
                                        "--resume_checkpoint", "auto"], monkeypatch, capsys)
    assert code == 0, err
    ck = checkpoint.latest(str(run_dir))
    assert ck.step == 3 and ck.has("ema_0.9_") and ck.state["model_kind"] == "cgan"

    code, err = main_in_process(sample, ["--model_path", run_dir, "--num_samples", 6, *arch, "--logdir",
                                         tmp_path / "samples"], monkeypatch, capsys)
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "samples").glob("samples_*.npz"))
    assert files == ["samples_6x28x28x1.npz"]
    with np.load(tmp_path / "samples" / files[0]) as f:
        assert f["arr_0"].shape == (6, 28, 28, 1) and f["arr_0"].dtype == np.uint8
        assert f["arr_1"].dtype == np.int64 and f["arr_1"].shape == (6,) and set(f["arr_1"]) <= {0, 1}
    code, err = main_in_process(sample, ["--model_path", run_dir, "--model", "gan", "--logdir", tmp_path / "s2"],
                                monkeypatch, capsys)
    assert code == 2 and "holds a cgan generator, but --model is gan" in err

    out = tmp_path / "interp.png"
    code, err = main_in_process(interpolate, ["--model_path", run_dir / "ema_0.9_000003.pt", "--seeds", "0,1",
                                              "--num_steps", 3, "--class_label", 1, "--out", out, "--logdir",
                                              tmp_path / "interp"], monkeypatch, capsys)
    assert code == 0, err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (3 * 30 + 2, 2 * 30 + 2)  # lerp and slerp rows of 28 px + padding
