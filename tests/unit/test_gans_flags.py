"""The flag files parse with the entry points' parsers and hold the seeds' settings."""

import shlex
import subprocess

import pytest

import helpers
from gans import dcgan, interpolate, sample, train

FLAG_DIR = helpers.ROOT / "flags" / "gans"
ROLES = {"TRAIN": train, "SAMPLE": sample, "INTERPOLATE": interpolate}


def _flags(path):
    script = (f'source "{path}"; '
              'for v in MODEL_FLAGS TRAIN_FLAGS SAMPLE_FLAGS INTERPOLATE_FLAGS; do echo "${!v}"; done')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    return dict(zip(["MODEL", "TRAIN", "SAMPLE", "INTERPOLATE"], out))


@pytest.mark.parametrize("path", sorted(FLAG_DIR.glob("*.sh")), ids=lambda p: p.name)
def test_every_role_parses(path):
    flags = _flags(path)
    for role, module in ROLES.items():
        args = module.create_argparser().parse_args(shlex.split(flags["MODEL"] + " " + flags[role]))
        if role == "TRAIN":
            train.check_args(args)
            if args.model in dcgan.MODEL_KINDS:  # the FC kinds (gan, cgan) take any size
                dcgan.num_stages(args.image_size)


def test_cifar10_is_seed_003s_configuration():
    f = _flags(FLAG_DIR / "dcgan_cifar10.sh")
    a = train.create_argparser().parse_args(shlex.split(f["MODEL"] + " " + f["TRAIN"]))
    assert (a.model, a.image_size, a.num_channels, a.batch_size, a.nz, a.ngf, a.ndf, a.epochs) == \
        ("dcgan", 64, 3, 128, 100, 64, 64, 50)
    assert (a.lr_g, a.lr_d, a.beta1, a.max_steps) == (1.6e-4, 1.25e-4, 0.5, 0)
    s = sample.create_argparser().parse_args(shlex.split(f["MODEL"] + " " + f["SAMPLE"]))
    assert s.num_samples == 50000


def test_fashion_mnist_is_seed_000s_setting():
    for name, model, batch in (("dcgan_fashion_mnist.sh", "dcgan", 64), ("cdcgan_fashion_mnist.sh", "cdcgan", 128)):
        f = _flags(FLAG_DIR / name)
        a = train.create_argparser().parse_args(shlex.split(f["MODEL"] + " " + f["TRAIN"]))
        assert (a.model, a.image_size, a.num_channels, a.batch_size, a.epochs) == (model, 32, 1, batch, 10)
