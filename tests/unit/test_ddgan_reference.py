"""Our networks against NVlabs/denoising-diffusion-gan's own modules, when a clone is at hand
(tests/ddgan_reference.py loads them). Same random weights in both, same inputs: the outputs
must agree. Skipped when no clone is available; CI compares against the reference's recorded
outputs instead (tests/unit/test_ddgan_golden.py).
"""

import pytest
import torch

from ddgan.discriminator import DiscriminatorLarge, DiscriminatorSmall
from ddgan.ncsnpp import GeneratorConfig, NCSNpp
from ddgan_reference import available, modules, options, random_weights

pytestmark = pytest.mark.skipif(not available(), reason="no clone of the reference")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    with modules(tmp_path_factory.mktemp("ddgan_reference")) as refs:
        yield refs


@pytest.mark.parametrize("variant", [
    {}, dict(embedding_type="fourier"), dict(progressive="output_skip"),
    dict(progressive_input="input_skip", progressive_combine="cat"), dict(fir=False),
    dict(resblock_type="biggan_oneadagn", not_use_tanh=True),
    dict(skip_rescale=False, resamp_with_conv=False, resblock_type="ddpm"),
    dict(conditional=False, progressive_input="none"), dict(centered=False)])
def test_generator_equals_reference(reference, variant):
    RefG, _ = reference
    a = options(**variant)
    ref, ours = RefG(a), NCSNpp(GeneratorConfig.from_options(vars(a)))
    assert list(ref.state_dict()) == list(ours.state_dict())
    sd = random_weights(ref.state_dict())
    ref.load_state_dict(sd)
    ours.load_state_dict(sd)
    torch.manual_seed(1)
    x, z = torch.randn(4, 3, 16, 16), torch.randn(4, 8)
    t = torch.arange(4) if a.embedding_type == "positional" else torch.rand(4) + 0.1
    with torch.no_grad():
        assert torch.allclose(ref(x, t, z), ours(x, t, z), atol=1e-5)


@pytest.mark.parametrize("ours_cls,ref_name,size", [(DiscriminatorSmall, "Discriminator_small", 32),
                                                     (DiscriminatorLarge, "Discriminator_large", 64)])
def test_discriminators_equal_reference(reference, ours_cls, ref_name, size):
    _, module = reference
    ref = getattr(module, ref_name)(nc=6, ngf=4, t_emb_dim=16, act=torch.nn.LeakyReLU(0.2))
    ours = ours_cls(nc=6, ngf=4, t_emb_dim=16)
    assert list(ref.state_dict()) == list(ours.state_dict())
    sd = random_weights(ref.state_dict())
    ref.load_state_dict(sd)
    ours.load_state_dict(sd)
    torch.manual_seed(2)
    x, y, t = torch.randn(8, 3, size, size), torch.randn(8, 3, size, size), torch.randint(0, 4, (8,))
    with torch.no_grad():
        a, b = ref(x, t, y), ours(x, t, y)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-4 * a.abs().max().item())


def test_netG_of_an_exp_folder_loads_into_the_reference(reference, tmp_path):
    """`ddgan.train --exp` writes netG_{epoch}.pth as train_ddgan.py does: test_ddgan.py's loading
    (strip `module.`, strict load into its NCSNpp) takes it."""
    import json

    import numpy as np
    from PIL import Image

    import helpers

    RefG, _ = reference
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "data" / f"{i}.png")
    a = options()
    flags = ["--dataset", "cifar10", "--exp", "e", "--data_dir", tmp_path / "data", "--batch_size", 8,
             "--num_epoch", 1, "--max_steps", 1, "--use_ema", "--image_size", 16, "--num_channels_dae", 16,
             "--n_mlp", 2, "--ch_mult", "1,2,2", "--num_res_blocks", 1, "--attn_resolutions", 8, "--nz", 8,
             "--z_emb_dim", 16, "--t_emb_dim", 16, "--ngf", 4]
    proc = helpers.py("ddgan.train", *flags, cwd=tmp_path)
    assert proc.returncode == 0, helpers.describe(proc)
    exp = tmp_path / "saved_info" / "dd_gan" / "cifar10" / "e"
    assert json.loads((exp / "options.json").read_text())["use_ema"] is True
    ckpt = torch.load(exp / "netG_0.pth", map_location="cpu")
    for key in list(ckpt):  # test_ddgan.py's loop
        ckpt[key[7:]] = ckpt.pop(key)
    RefG(a).load_state_dict(ckpt, strict=True)
    # with --use_ema the file holds the EMA weights, as the reference swaps them in to save
    ema = torch.load(exp / "ema_0.9999_000001.pt", map_location="cpu")
    assert all(torch.equal(ema[k], v) for k, v in ckpt.items())
