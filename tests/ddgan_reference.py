"""NVlabs/denoising-diffusion-gan's own network modules, loaded from a git clone for comparison.

The reference's model files are read from the clone ($DDGAN_REFERENCE_REPO, default the build
machine's mirror) into a temporary directory; nothing of it is part of this repository. Its
CUDA ops are replaced by their CPU definitions (upfirdn2d_native, taken from the same clone, and
leaky_relu(x + b, 0.2) * sqrt 2). Used by tests/unit/test_ddgan_reference.py (when a clone is at hand)
and by tests/golden/make_ddgan_golden.py, which records the reference's outputs once so that CI
compares against them without a clone (tests/unit/test_ddgan_golden.py).
"""

import argparse
import contextlib
import os
import subprocess
import sys

import torch

REPO = os.environ.get("DDGAN_REFERENCE_REPO", "/work/.mirror/NVlabs+denoising-diffusion-gan/repo")

OP_INIT = """
import torch.nn.functional as F
from .upfirdn2d_cpu import upfirdn2d_native
def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
    return upfirdn2d_native(input, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])
def fused_leaky_relu(x, bias, negative_slope=0.2, scale=2 ** 0.5):
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.ndim - 2))), 0.2) * scale
"""


def available(repo=REPO) -> bool:
    return os.path.isdir(repo)


def _git_show(repo, path):
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True,
                          capture_output=True, text=True).stdout


@contextlib.contextmanager
def modules(root, repo=REPO):
    """(NCSNpp class, discriminator module) of the reference, its files written under `root`."""
    names = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "HEAD", "--name-only"], check=True,
                           capture_output=True, text=True).stdout.split()
    for name in names:
        if name.startswith("score_sde/models/") and name.endswith(".py") or name == "score_sde/__init__.py":
            os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
            with open(os.path.join(root, name), "w") as f:
                f.write(_git_show(repo, name))
    op = os.path.join(root, "score_sde", "op")
    os.makedirs(op, exist_ok=True)
    native = _git_show(repo, "score_sde/op/upfirdn2d.py")
    native = native[native.index("def upfirdn2d_native"):]
    with open(os.path.join(op, "upfirdn2d_cpu.py"), "w") as f:
        f.write("import torch\nimport torch.nn.functional as F\n\n" + native)
    with open(os.path.join(op, "__init__.py"), "w") as f:
        f.write(OP_INIT)
    sys.path.insert(0, str(root))
    try:
        from score_sde.models import discriminator, ncsnpp_generator_adagn
        yield ncsnpp_generator_adagn.NCSNpp, discriminator
    finally:
        sys.path.remove(str(root))
        for mod in [m for m in sys.modules if m == "score_sde" or m.startswith("score_sde.")]:
            del sys.modules[mod]


def options(**kw):
    """train_ddgan.py's generator options, at a small size."""
    base = dict(image_size=16, num_channels=3, centered=True, num_channels_dae=16, n_mlp=2,
                ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=(8,), dropout=0.0,
                resamp_with_conv=True, conditional=True, fir=True, fir_kernel=[1, 3, 3, 1],
                skip_rescale=True, resblock_type="biggan", progressive="none",
                progressive_input="residual", progressive_combine="sum",
                embedding_type="positional", fourier_scale=16.0, not_use_tanh=False, nz=8,
                z_emb_dim=16)
    base.update(kw)
    return argparse.Namespace(**base)


def random_weights(state_dict, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in state_dict.items()}
