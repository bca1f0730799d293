"""Why DDGAN's digits run sits at chance: its raw generator against its EMAs, and a probe of D.

    python benchmarks/ddgan_dynamics.py [--steps 900] [--every 150] [--num_samples 500]
        [--rates 0.99,0.995,0.998,0.999] [--probe_steps 150] [-- EXTRA DDGAN FLAGS]

One process, one thread, `flags/ddgan/digits16.sh`'s model and training flags (overridable after
`--`, e.g. `-- --lr_g 1e-4 --lr_d 1e-3 --seed 7`), on data/digits16/train (datasets/digits.py).
The step is ddgan.trainer's own. Every --every steps it samples --num_samples images (seeds fixed)
from the raw generator and from an EMA of it at each of --rates, and prints FD-digits, precision
and recall (k = 3) of each, beside the mean D loss since the last row. At the end it trains D
alone for --probe_steps against the frozen generator, once continuing the trained D and once from
a fresh D: if D then leaves 2 ln 2, it could tell the samples apart and it is the game that keeps
it at chance. docs/evaluations.md (DDGAN: what the discriminator at chance means) has the figures.
"""

import argparse
import os
import shlex
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ddgan import script_util, train  # noqa: E402 (path)
from ddgan.trainer import Trainer  # noqa: E402 (path)
from evaluations import digits_features, metrics  # noqa: E402 (path)
from trainkit import data, ema, npz  # noqa: E402 (path)


def flag_file_args(path):
    """The training flags launch/run.sh passes for a flag file ($MODEL_FLAGS $DIFFUSION_FLAGS
    $TRAIN_FLAGS), read by sourcing it in bash as run.sh does."""
    script = 'source "$1"; echo "$MODEL_FLAGS $DIFFUSION_FLAGS $TRAIN_FLAGS"'
    out = subprocess.run(["bash", "-c", script, "bash", path], capture_output=True, text=True, check=True)
    return shlex.split(out.stdout)


def endless(batches):
    while True:
        yield from batches


class Judge:
    def __init__(self, o, diffusion, num_samples):
        self.o, self.diffusion, self.n = o, diffusion, num_samples
        self.net = digits_features.load_classifier()
        self.ref = digits_features.features(digits_features.digits_images("train", o["image_size"])[0], self.net)

    @torch.no_grad()
    def __call__(self, state_dict):
        g = script_util.build_generator(self.o)
        g.load_state_dict(state_dict)
        g.eval()
        rng = torch.Generator().manual_seed(0)
        shape = (self.o["num_channels"], self.o["image_size"], self.o["image_size"])
        x = self.diffusion.sample(g, torch.randn(self.n, *shape, generator=rng), self.o["nz"],
                                  randn=lambda *s: torch.randn(self.n, *s, generator=rng))
        feats = digits_features.features(npz.to_uint8(x), self.net)
        fd = metrics.fd_bootstrap(self.ref, feats, rounds=5)[0]
        precision, recall = metrics.precision_recall(self.ref, feats, 3)
        return f"FD {fd:6.1f} P {precision:.2f} R {recall:.2f}"


def probe(o, generator, discriminator, diffusion, batches, steps):
    """errD after `steps` D-only updates against the frozen generator."""
    trainer = Trainer(o, generator, discriminator, diffusion, torch.device("cpu"))
    losses = []
    for i in range(steps):
        trainer.updates = i
        losses.append(float(trainer.d_step(next(batches)[0])["errD"]))
    return np.mean(losses[-max(1, steps // 5):])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flag_file", default=os.path.join(ROOT, "flags/ddgan/digits16.sh"))
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data/digits16/train"))
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--every", type=int, default=150)
    p.add_argument("--num_samples", type=int, default=500)
    p.add_argument("--rates", default="0.99,0.995,0.998,0.999")
    p.add_argument("--probe_steps", type=int, default=150)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    o = vars(train.create_parser().parse_args(flag_file_args(a.flag_file) + ["--num_epoch", "100000"] + extra))
    torch.manual_seed(o["seed"])
    dataset = data.load_dataset(a.data_dir, o["image_size"], channels=o["num_channels"])
    batches = data.Batches(dataset, o["batch_size"], seed=o["seed"], random_flip=o["random_flip"])
    generator, discriminator = script_util.build_generator(o), script_util.build_discriminator(o)
    diffusion = script_util.build_diffusion(o)
    trainer = Trainer(o, generator, discriminator, diffusion, torch.device("cpu"))
    rates = [float(r) for r in a.rates.split(",")]
    judge = Judge(o, diffusion, a.num_samples)
    print(f"flags: {' '.join(extra) or '(the flag file as is)'}; seed {o['seed']}", flush=True)
    averages, losses, start, it = None, [], time.time(), endless(batches)
    for step in range(a.steps):
        stats = trainer.step(next(it), step, step // batches.batches_per_epoch)
        # like the trainer's own EMA: started from the weights after the first update
        averages = ema.EMA(generator, rates) if averages is None else averages
        if step:
            averages.update(generator)
        losses.append(float(stats["errD"]))
        if (step + 1) % a.every == 0:
            cells = [f"raw {judge(generator.state_dict())}"]
            cells += [f"ema {r} {judge(averages.state_dict(r, generator))}" for r in rates]
            print(f"step {step + 1:5d} {time.time() - start:5.0f} s errD {np.mean(losses[-a.every:]):.3f} | "
                  + " | ".join(cells), flush=True)
    if a.probe_steps:
        trained = probe(o, generator, discriminator, diffusion, it, a.probe_steps)
        fresh = probe(o, generator, script_util.build_discriminator(o), diffusion, it, a.probe_steps)
        print(f"D alone for {a.probe_steps} steps against the frozen generator: errD {trained:.3f} "
              f"(the trained D), {fresh:.3f} (a fresh D); chance is {2 * np.log(2):.3f}", flush=True)


if __name__ == "__main__":
    main()
