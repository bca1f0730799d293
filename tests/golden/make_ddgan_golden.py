"""Record NVlabs/denoising-diffusion-gan's network outputs once, for tests/unit/test_ddgan_golden.py.

    python tests/golden/make_ddgan_golden.py [--repo CLONE] [--out tests/golden/ddgan_reference.pt]

Builds the reference's NCSN++ generator (two configurations that between them take most of its
code paths) and both discriminators from a clone (tests/ddgan_reference.py), loads seeded
random weights, runs seeded inputs and saves the outputs, with a fingerprint (sum and sum of
squares, float64) of every weight and input tensor so that the test knows it regenerated the
same ones: data only, no code of the reference, a few kB. Rerun it only if the reference itself
changes.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for ddgan_reference

import ddgan_reference  # noqa: E402 (path)

SMALL = dict(num_channels_dae=8, image_size=8, ch_mult=[1, 2], attn_resolutions=(4,))
GENERATORS = {
    # train_ddgan.py's CIFAR-10 choices: positional embedding, BigGAN blocks, FIR, residual input
    "positional_biggan": dict(SMALL),
    # the other branches: Fourier embedding, skip outputs, input skips concatenated, one AdaGN, no tanh
    "fourier_skips": dict(SMALL, embedding_type="fourier", progressive="output_skip",
                          progressive_input="input_skip", progressive_combine="cat",
                          resblock_type="biggan_oneadagn", not_use_tanh=True),
}
DISCRIMINATORS = {"Discriminator_small": 16, "Discriminator_large": 64}  # class -> image size


def fingerprint(tensors: dict) -> dict:
    """{'keys': names, 'values': (n, 2) float64 of each tensor's sum and sum of squares}."""
    return {"keys": list(tensors),
            "values": torch.stack([torch.stack([v.double().sum(), v.double().square().sum()])
                                   for v in tensors.values()])}


def generator_inputs(a):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, a.num_channels, a.image_size, a.image_size, generator=g)
    z = torch.randn(4, a.nz, generator=g)
    t = torch.arange(4) if a.embedding_type == "positional" else torch.rand(4, generator=g) + 0.1
    return {"x": x, "t": t, "z": z}


def discriminator_inputs(size):
    g = torch.Generator().manual_seed(2)
    x_t, x_tp1 = torch.randn(4, 3, size, size, generator=g), torch.randn(4, 3, size, size, generator=g)
    return {"x_t": x_t, "t": torch.randint(0, 4, (4,), generator=g), "x_tp1": x_tp1}


def record(repo):
    out = {"source": "NVlabs/denoising-diffusion-gan " + subprocess.run(
        ["git", "-C", repo, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip(),
        "generators": {}, "discriminators": {}}
    with tempfile.TemporaryDirectory() as root, ddgan_reference.modules(root, repo) as (RefG, disc):
        for name, kw in GENERATORS.items():
            a = ddgan_reference.options(**kw)
            net = RefG(a)
            sd = ddgan_reference.random_weights(net.state_dict())
            net.load_state_dict(sd)
            inputs = generator_inputs(a)
            with torch.no_grad():
                y = net(inputs["x"], inputs["t"], inputs["z"])
            out["generators"][name] = {"options": vars(a), "weights": fingerprint(sd), "inputs": fingerprint(inputs),
                                       "output": y}
        for name, size in DISCRIMINATORS.items():
            net = getattr(disc, name)(nc=6, ngf=4, t_emb_dim=16, act=torch.nn.LeakyReLU(0.2))
            sd = ddgan_reference.random_weights(net.state_dict())
            net.load_state_dict(sd)
            inputs = discriminator_inputs(size)
            with torch.no_grad():
                y = net(inputs["x_t"], inputs["t"], inputs["x_tp1"])
            out["discriminators"][name] = {"size": size, "weights": fingerprint(sd), "inputs": fingerprint(inputs),
                                           "output": y}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", default=ddgan_reference.REPO, help="a git clone of NVlabs/denoising-diffusion-gan")
    p.add_argument("--out", default=os.path.join(HERE, "ddgan_reference.pt"))
    args = p.parse_args()
    if not ddgan_reference.available(args.repo):
        sys.exit(f"make_ddgan_golden.py: {args.repo}: no clone of the reference")
    data = record(args.repo)
    torch.save(data, args.out + ".tmp")
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB) from {data['source']}")


if __name__ == "__main__":
    main()
