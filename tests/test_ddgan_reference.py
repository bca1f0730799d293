"""Our networks against NVlabs/denoising-diffusion-gan's own modules, when a clone is at hand.

The reference's model files are read from a git clone ($DDGAN_REFERENCE_REPO, default the
build machine's mirror) into a temporary directory at test time; nothing of it is part of this
repository. Its CUDA ops are replaced by their CPU definitions (upfirdn2d_native, taken from the
same clone, and leaky_relu(x + b, 0.2) * sqrt 2). Same random weights in both, same inputs: the
outputs must agree. Skipped when no clone is available (CI).
"""

import argparse
import os
import subprocess
import sys

import pytest
import torch

from ddgan.discriminator import DiscriminatorLarge, DiscriminatorSmall
from ddgan.ncsnpp import GeneratorConfig, NCSNpp

REPO = os.environ.get("DDGAN_REFERENCE_REPO", "/work/.mirror/NVlabs+denoising-diffusion-gan/repo")

pytestmark = pytest.mark.skipif(not os.path.isdir(REPO), reason="no clone of the reference")

OP_INIT = """
import torch.nn.functional as F
from .upfirdn2d_cpu import upfirdn2d_native
def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
    return upfirdn2d_native(input, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])
def fused_leaky_relu(x, bias, negative_slope=0.2, scale=2 ** 0.5):
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.ndim - 2))), 0.2) * scale
"""


def git_show(path):
    return subprocess.run(["git", "-C", REPO, "show", f"HEAD:{path}"], check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddgan_reference")
    names = subprocess.run(["git", "-C", REPO, "ls-tree", "-r", "HEAD", "--name-only"], check=True,
                           capture_output=True, text=True).stdout.split()
    for name in names:
        if name.startswith("score_sde/models/") and name.endswith(".py") or name == "score_sde/__init__.py":
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(git_show(name))
    op = root / "score_sde" / "op"
    op.mkdir(parents=True)
    native = git_show("score_sde/op/upfirdn2d.py")
    native = native[native.index("def upfirdn2d_native"):]
    (op / "upfirdn2d_cpu.py").write_text("import torch\nimport torch.nn.functional as F\n\n" + native)
    (op / "__init__.py").write_text(OP_INIT)
    sys.path.insert(0, str(root))
    try:
        from score_sde.models import discriminator, ncsnpp_generator_adagn
        yield ncsnpp_generator_adagn.NCSNpp, discriminator
    finally:
        sys.path.remove(str(root))
        for mod in [m for m in sys.modules if m == "score_sde" or m.startswith("score_sde.")]:
            del sys.modules[mod]


def options(**kw):
    base = dict(image_size=16, num_channels=3, centered=True, num_channels_dae=16, n_mlp=2,
                ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=(8,), dropout=0.0,
                resamp_with_conv=True, conditional=True, fir=True, fir_kernel=[1, 3, 3, 1],
                skip_rescale=True, resblock_type="biggan", progressive="none",
                progressive_input="residual", progressive_combine="sum",
                embedding_type="positional", fourier_scale=16.0, not_use_tanh=False, nz=8,
                z_emb_dim=16)
    base.update(kw)
    return argparse.Namespace(**base)


def random_weights(state_dict):
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in state_dict.items()}


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
             "--num_epoch", 1, "--max_steps", 1, "--use_ema", "--image_size", 16, "--num_channels_dae", 16, "--n_mlp", 2,
             "--ch_mult", "1,2,2", "--num_res_blocks", 1, "--attn_resolutions", 8, "--nz", 8,
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
