"""Our NCSN++ generator and discriminators against NVlabs/denoising-diffusion-gan's recorded
outputs (tests/golden/ddgan_reference.pt, written once from the reference's own modules by
tests/golden/make_ddgan_golden.py): the same seeded weights and inputs must give the same
outputs, on every CI run, without a clone of the reference (test_ddgan_reference.py compares
against the live modules when one is at hand)."""

import os

import pytest
import torch

from ddgan.discriminator import DiscriminatorLarge, DiscriminatorSmall
from ddgan.ncsnpp import GeneratorConfig, NCSNpp
from ddgan_reference import options, random_weights
from golden.make_ddgan_golden import GENERATORS, discriminator_inputs, fingerprint, generator_inputs

GOLDEN_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden",
                           "ddgan_reference.pt")  # tests/golden/
GOLDEN = torch.load(GOLDEN_FILE, weights_only=True)
OURS = {"Discriminator_small": DiscriminatorSmall, "Discriminator_large": DiscriminatorLarge}


def _same_fingerprint(tensors, recorded, what):
    mine = fingerprint(tensors)
    assert mine["keys"] == recorded["keys"], f"{what}: other tensor names than the reference's"
    # the seeded generator gave the same numbers as when the file was written
    torch.testing.assert_close(mine["values"], recorded["values"], rtol=1e-12, atol=1e-9, msg=what)


def test_the_golden_file_covers_both_generator_configurations():
    assert set(GOLDEN["generators"]) == set(GENERATORS) == {"positional_biggan", "fourier_skips"}
    assert GOLDEN["source"].startswith("NVlabs/denoising-diffusion-gan ")


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_equals_the_references_recorded_output(name):
    g = GOLDEN["generators"][name]
    a = options(**GENERATORS[name])
    assert vars(a) == g["options"]
    ours = NCSNpp(GeneratorConfig.from_options(vars(a)))
    sd = random_weights(ours.state_dict())  # our keys, in our order: they must be the reference's
    _same_fingerprint(sd, g["weights"], f"{name} weights")
    ours.load_state_dict(sd)
    inputs = generator_inputs(a)
    _same_fingerprint(inputs, g["inputs"], f"{name} inputs")
    with torch.no_grad():
        out = ours(inputs["x"], inputs["t"], inputs["z"])
    torch.testing.assert_close(out, g["output"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(OURS))
def test_discriminator_equals_the_references_recorded_output(name):
    d = GOLDEN["discriminators"][name]
    ours = OURS[name](nc=6, ngf=4, t_emb_dim=16)
    sd = random_weights(ours.state_dict())
    _same_fingerprint(sd, d["weights"], f"{name} weights")
    ours.load_state_dict(sd)
    inputs = discriminator_inputs(d["size"])
    _same_fingerprint(inputs, d["inputs"], f"{name} inputs")
    with torch.no_grad():
        out = ours(inputs["x_t"], inputs["t"], inputs["x_tp1"])
    ref = d["output"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4 * ref.abs().max().item())
