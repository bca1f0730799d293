"""The seed projects' comparison configs (flags/compare/seed*.sh) end to end on tiny archives in
the real download formats: converted by datasets/*.py, every model trained for 2 steps and
sampled through its flag file, judged, and the seed's pictures written under the seed's names.

Each test sources the real config and shrinks only its costs (steps, batch, sample count,
sampling steps) by bash substitution, so the flag files, data preparation, feature space and
picture names under test are the shipped ones."""

import numpy as np
import pytest
from PIL import Image

import helpers
from archives import celeba_zip, mnist_files
from evaluations import report
from evaluations.grid import grid_image
from trainkit import npz

pytestmark = pytest.mark.slow

SCALE, PAD = 3, 2  # evaluations.report's grid PNGs: cells 2 px apart, enlarged 3x


def _shrunk(tmp_path, name, nproc, num_samples, batch, lines=()):
    # Sampling runs the model on blocks of 8 rows (batch invariance): a multiple of 8 samples
    # wastes nothing. The DDIM sampler goes where it is the line's last, and is cut to 2 steps
    # where it is not (cddpm's, followed by its labels).
    path = tmp_path / f"shrunk-{name}"
    path.write_text(
        f'source "{helpers.ROOT}/flags/compare/{name}"\n'
        # no quality probe: 200 samples of the 1000-step DDPM cost a minute; test_compare covers it
        f"NPROC={nproc}\nNUM_SAMPLES={num_samples}\nSAMPLE_BATCH=8\nREFERENCE_SIZE=30\nPROBE_POINTS=0\n"
        + "".join(f"{line}\n" for line in lines) +
        'RUNS="${RUNS//--max_steps 1000000/--max_steps 2 --batch_size ' + str(batch) + '}"\n'
        'RUNS="${RUNS// ; ddim50: --timestep_respacing ddim50 --use_ddim True$\'\\n\'/$\'\\n\'}"\n'
        'RUNS="${RUNS//--timestep_respacing 1000/--timestep_respacing 2}"\n'
        'RUNS="${RUNS//ddim50/ddim2}"\n'
    )
    return path


def _compare(tmp_path, name, nproc, data_root, *extra, num_samples=16, batch=4, lines=()):
    out = tmp_path / "cmp"
    # a one-process job may use both cores (helpers pins every rank to one thread)
    env = helpers.test_env(OMP_NUM_THREADS=2) if nproc == 1 else None
    proc = helpers.py("evaluations.compare", "--config", _shrunk(tmp_path, name, nproc, num_samples, batch, lines),
                      "--data_root", data_root, "--data_dir", tmp_path / "data", "--logdir", out, "--no_baseline",
                      "--no_control", "--strict", *extra, env=env)
    assert proc.returncode == 0, helpers.describe(proc)
    return out


def _samples(out, run, sampler):
    return npz.read_samples(str(next((out / run / f"samples-{sampler}").glob("samples_*.npz"))))


def _assert_square_grid(png, images):
    n = int(np.sqrt(min(64, len(images))))
    h, w = grid_image(images[: n * n], nrow=n).shape[:2]
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (w * SCALE, h * SCALE)


def _assert_class_grid(png, images, labels, classes):
    """One row per class: the height is the rows' cells plus one padding."""
    assert len(set(labels.tolist())) == classes
    with Image.open(png) as im:
        assert im.format == "PNG"
        assert im.size[1] == classes * (images.shape[1] + PAD) * SCALE + PAD * SCALE


def _assert_pictures(out, names):
    for name in names:
        with Image.open(out / "results" / name) as im:
            assert im.format == "PNG"
    md = (out / "report.md").read_text()
    assert "## The reference project's pictures" in md and all(f"results/{n}" in md for n in names)


def test_seed002_mnist_28px_with_two_ranks_a_stage(tmp_path):
    mnist_files(tmp_path / "mnist", n_train=40, n_test=10, every_class=True)
    out = _compare(tmp_path, "seed002_mnist.sh", 2, tmp_path / "mnist", "--launcher", "torchrun", num_samples=8)
    assert report.check(str(out), ["gan", "cgan", "ddpm"]) == []
    assert (tmp_path / "data" / "train" / "0_00000.png").is_file()  # converted from the IDX files
    gan, _ = _samples(out, "gan", "default")
    assert gan.shape == (8, 28, 28, 1) and gan.dtype == np.uint8  # native 28 px, not resized
    _assert_square_grid(out / "results" / "gan_samples.png", gan)
    images, labels = _samples(out, "cgan", "default")
    _assert_class_grid(out / "results" / "cgan_samples.png", images, labels, len(set(labels.tolist())))
    ddpm, _ = _samples(out, "ddpm", "ddpm-1000")
    assert ddpm.shape == (8, 28, 28, 1)
    _assert_square_grid(out / "results" / "ddpm_samples.png", ddpm)
    _assert_pictures(out, ["gan_samples.png", "cgan_samples.png", "ddpm_samples.png", "loss_curve.png"])
    assert "torchrun x 2" in (out / "report.md").read_text()


def test_seed000_fashion_mnist(tmp_path):
    """One process per stage (seed 002's test runs a config's stages with 2 ranks each)."""
    mnist_files(tmp_path / "fashion", n_train=40, n_test=10, every_class=True, seed=1)
    out = _compare(tmp_path, "seed000_fashion_mnist.sh", 1, tmp_path / "fashion")
    assert report.check(str(out), ["gan", "cgan", "ddpm", "cddpm"]) == []
    images, labels = _samples(out, "cddpm", "ddpm-1000")
    assert images.shape == (16, 32, 32, 1)
    assert labels.tolist() == [i % 10 for i in range(16)]  # --class_labels 0..9: balanced
    _assert_class_grid(out / "results" / "cddpm_samples.png", images, labels, 10)
    images, labels = _samples(out, "cgan", "default")
    _assert_class_grid(out / "results" / "cgan_samples.png", images, labels, len(set(labels.tolist())))
    _assert_square_grid(out / "results" / "ddpm_samples.png", _samples(out, "ddpm", "ddpm-1000")[0])
    _assert_pictures(out, ["gan_samples.png", "cgan_samples.png", "ddpm_samples.png", "cddpm_samples.png",
                           "loss_curve.png"])
    md = (out / "report.md").read_text()
    assert "class acc." in md and "| FD-digits |" in md and "local x 1" in md


def test_seed004_celeba64_with_fid(tmp_path):
    from evaluations import inception

    weights = inception.make_random_weights(str(tmp_path / "inception.pth"), seed=0, calibration_batches=1,
                                            batch_size=2)
    (tmp_path / "celeba").mkdir()
    celeba_zip(tmp_path / "celeba" / "img_align_celeba.zip", range(1, 13))
    # celeba64.sh's U-Net (128 channels, 3 res blocks) costs a minute a step on one CPU core; here
    # it trains and samples 32 channels wide with one res block (the flags come last and win in
    # both stages); test_seed_diffusion_flag_files_build_their_models runs the full-size one.
    narrow = "--num_channels 32 --num_res_blocks 1"
    train = "improved_diffusion | 3 | --max_steps 1000000"
    lines = [f'RUNS="${{RUNS//{train}/{train} {narrow}}}"',
             f'RUNS="${{RUNS//--timestep_respacing 1000/--timestep_respacing 1000 {narrow}}}"']
    out = _compare(tmp_path, "seed004_celeba64.sh", 1, tmp_path / "celeba", "--inception_weights", weights,
                   num_samples=8, batch=2, lines=lines)
    assert report.check(str(out), ["dcgan", "ddpm"]) == []
    md = (out / "report.md").read_text()
    assert "| FID |" in md and "FD-digits" not in md and "Inception-v3" in md and "local x 1" in md
    for run, sampler, picture in (("dcgan", "default", "dcgan_samples.png"), ("ddpm", "ddpm-1000", "ddpm_samples.png")):
        images, _ = _samples(out, run, sampler)
        assert images.shape == (8, 64, 64, 3)
        _assert_square_grid(out / "results" / picture, images)
    _assert_pictures(out, ["dcgan_samples.png", "ddpm_samples.png", "loss_curve.png"])
    # the reference's features, computed once
    assert list((out / "reference").glob("train-12-of-12.inception-features.npz"))


@pytest.mark.parametrize("name, archive, command", [
    ("seed002_mnist.sh", "train-images-idx3-ubyte.gz", "datasets/mnist.py"),
    ("seed000_fashion_mnist.sh", "train-images-idx3-ubyte.gz", "datasets/fashion_mnist.py"),
    ("seed004_celeba64.sh", "img_align_celeba.zip", "datasets/celeba.py"),
])
def test_missing_archive_stops_before_training(tmp_path, capsys, name, archive, command):
    from evaluations import compare

    (tmp_path / "empty").mkdir()
    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--config", str(helpers.ROOT / "flags" / "compare" / name),
                      "--data_root", str(tmp_path / "empty"), "--data_dir", str(tmp_path / "data"),
                      "--logdir", str(out)])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and archive in lines[0] and command in lines[0] and str(tmp_path / "empty") in lines[0]
    assert not out.exists() and not (tmp_path / "data").exists()  # nothing trained, nothing half-converted


def _flag_file_model(flag_file):
    """improved_diffusion's model and diffusion as the flag file's MODEL_FLAGS and DIFFUSION_FLAGS build them."""
    import shlex
    import subprocess

    from improved_diffusion import train

    text = subprocess.run(["bash", "-c", f'source "{flag_file}"; echo "$MODEL_FLAGS $DIFFUSION_FLAGS"'],
                          capture_output=True, text=True, check=True).stdout
    args = train.create_argparser().parse_args(shlex.split(text))
    return train.create_model_and_diffusion_checked(args)


def test_seed002_unet_at_28px_has_no_attention_and_the_linear_schedule():
    import torch

    from improved_diffusion.unet import AttentionBlock

    model, diffusion = _flag_file_model(helpers.ROOT / "flags/improved_diffusion/ddpm_mnist28_linear.sh")
    # --attention_resolutions none: no attention at any resolution; only openai's middle block keeps its one
    blocks = [*model.input_blocks.modules(), *model.output_blocks.modules()]
    assert not any(isinstance(m, AttentionBlock) for m in blocks)
    assert sum(isinstance(m, AttentionBlock) for m in model.middle_block) == 1
    out = model(torch.zeros(2, 1, 28, 28), torch.tensor([0, 999]))
    assert out.shape == (2, 1, 28, 28)  # grey in, epsilon out (no learned variance), 28 -> 14 -> 7 -> 28 px
    assert diffusion.num_timesteps == 1000
    assert np.isclose(diffusion.betas[0], 1e-4) and np.isclose(diffusion.betas[-1], 0.02)  # seed 002's schedule
    widths = sorted({m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)} - {1})
    assert widths[:3] == [32, 64, 128]


def test_gan_mnist28_flag_file_trains_and_samples(tmp_path):
    mnist_files(tmp_path / "mnist", n_train=16, n_test=2, every_class=True)
    proc = helpers.script("datasets/mnist.py", tmp_path / "mnist", "--out", tmp_path / "mnist28", timeout=300)
    assert proc.returncode == 0, helpers.describe(proc)
    flags = [helpers.ROOT / "flags" / "gans" / "gan_mnist28.sh"]
    run_dir = tmp_path / "run"
    proc = helpers.launch("local", 1, "gans.train", "--data_dir", tmp_path / "mnist28" / "train", "--max_steps", 2,
                          "--batch_size", 4, "--logdir", run_dir, flag_files=flags)
    assert proc.returncode == 0, helpers.describe(proc)
    assert (run_dir / "model000002.pt").is_file()
    proc = helpers.launch("local", 1, "gans.sample", "--model_path", run_dir, "--num_samples", 6,
                          "--batch_size", 3, "--logdir", tmp_path / "samples", flag_files=flags)
    assert proc.returncode == 0, helpers.describe(proc)
    images, labels = npz.read_samples(str(tmp_path / "samples" / "samples_6x28x28x1.npz"))
    assert images.shape == (6, 28, 28, 1) and labels is None


@pytest.mark.parametrize("name, size, channels, classes", [
    ("ddpm_fashion_mnist32.sh", 32, 1, None), ("cddpm_fashion_mnist32.sh", 32, 1, 10), ("celeba64.sh", 64, 3, None),
])
def test_seed_diffusion_flag_files_build_their_models(name, size, channels, classes):
    import torch

    from improved_diffusion.unet import AttentionBlock

    model, diffusion = _flag_file_model(helpers.ROOT / "flags" / "improved_diffusion" / name)
    assert diffusion.num_timesteps == 1000  # every seed model has 1000 steps
    assert model.in_channels == channels and model.num_classes == classes
    assert any(isinstance(m, AttentionBlock) for m in model.modules())
    y = torch.zeros(1, dtype=torch.long) if classes else None
    with torch.no_grad():
        assert model(torch.zeros(1, channels, size, size), torch.tensor([5]), y).shape[1:] == (
            model.out_channels, size, size)
