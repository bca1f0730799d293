"""A small, honest search of the digits flag files: each family at the budget the comparison gives it.

    python benchmarks/tune_digits.py [--families ddgan,improved_diffusion,dcgan,cdcgan]
        [--config flags/compare/digits.sh] [--minutes 15] [--num_samples 500] [--logdir DIR]

For every candidate (a few flag overrides on top of the family's flag file, listed in CANDIDATES
below) the comparison's own stages run: training through launch/run.sh with the config's process
count, stopped by the same `$TRAINKIT_DEADLINE` at the family's share of the budget
(`--minutes` x TRAIN_FRACTION x SHARE / sum of shares, as evaluations.compare computes it), then
the run's first sampler with seeds 0..N-1. Every candidate gets the same seeds. Printed: steps
reached, FD-digits ± its bootstrap std, precision and recall (k = 3), KID; a table in markdown at
the end, also written to `<logdir>/tune.md`. The choice made from it is in docs/evaluations.md.

Figures taken while something else runs mean little: the load average is printed beside them.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from evaluations import compare  # noqa: E402 (path)
from trainkit import fileio  # noqa: E402 (path)

# family (a RUNS name of the config) -> [(label, extra train flags[, model flags])]; the first is the
# flag file as is (for ddgan since 2026-12-02 candidate 19's --batch_size 8 --d_steps 3; the rows
# docs/evaluations.md measured before that were batch 16 with one D update). Model flags go to the
# sampler too: it builds the network from the flag file's.
CANDIDATES = {
    "ddgan": [
        ("as-is", []),
        ("D ngf 32", ["--ngf", "32"]),
        ("D ngf 32, ref lr", ["--ngf", "32", "--lr_d", "1.25e-4", "--lr_g", "1.6e-4"]),
        ("D ngf 32, lr 2e-4, r1 0.05", ["--ngf", "32", "--lr_d", "2e-4", "--lr_g", "2e-4", "--r1_gamma", "0.05"]),
        ("D ngf 32, batch 64", ["--ngf", "32", "--batch_size", "64"]),
        ("D ngf 32, T 2", ["--ngf", "32", "--num_timesteps", "2"]),
        # ngf 32 costs 2.5x a step: the budget buys ~80 steps. The EMA of 0.99 then still holds
        # a third of the first 100 steps' weights, so shorter EMAs and cheaper steps next.
        ("ema 0.9", ["--ema_decay", "0.9"]),
        ("ema 0.9, no attn, no FIR", ["--ema_decay", "0.9"], ["--fir", "--attn_resolutions", "1"]),
        ("ema 0.9, T 2", ["--ema_decay", "0.9", "--num_timesteps", "2"]),
        ("ema 0.9, lr 1e-3", ["--ema_decay", "0.9", "--lr_d", "1e-3", "--lr_g", "1e-3"]),
        ("ema 0.9, batch 16", ["--ema_decay", "0.9", "--batch_size", "16"]),
        # every shorter EMA lost to 0.99: keep it, and try the levers again with it
        ("lr 1e-3", ["--lr_d", "1e-3", "--lr_g", "1e-3"]),
        ("no attn, no FIR", [], ["--fir", "--attn_resolutions", "1"]),
        ("ema 0.995", ["--ema_decay", "0.995"]),
        # at the comparison's share (2.5 of 7.5 since this search): steps are what it lacks
        ("batch 16", ["--batch_size", "16"]),
        ("lr_d 1e-3", ["--lr_d", "1e-3"]),
        # benchmarks/ddgan_dynamics.py: with one D update per G update D sits at chance and G
        # wanders; three keep D off chance at about twice the cost of a step
        ("d_steps 3", ["--d_steps", "3"]),
        ("d_steps 3, ema 0.995", ["--d_steps", "3", "--ema_decay", "0.995"]),
        ("d_steps 2", ["--d_steps", "2"]),
        # K = 3 kept D off chance and won both pairs on FD-digits, but recall stayed 0.34-0.37:
        # more, noisier steps; a longer EMA with K = 2; a faster G against the informative D
        ("d_steps 3, batch 8", ["--d_steps", "3", "--batch_size", "8"]),
        ("d_steps 2, ema 0.995", ["--d_steps", "2", "--ema_decay", "0.995"]),
        ("d_steps 3, lr_g 1e-3", ["--d_steps", "3", "--lr_g", "1e-3"]),
    ],
    "improved_diffusion": [
        ("as-is", []),
        ("lr 2e-4", ["--lr", "2e-4"]),
        ("batch 32", ["--batch_size", "32"]),
    ],
    "dcgan": [
        ("as-is", []),
        ("lr 5e-4", ["--lr_g", "5e-4", "--lr_d", "5e-4"]),
    ],
    "cdcgan": [
        ("as-is", []),
        ("lr 5e-4", ["--lr_g", "5e-4", "--lr_d", "5e-4"]),
        # the one-row-per-class grid showed one image per class (recall 0): z is ignored
        ("hinge loss", ["--loss", "hinge"]),
        ("D ndf 64", [], ["--ndf", "64"]),
        ("lr_g 1e-4", ["--lr_g", "1e-4"]),
        ("nz 100", [], ["--nz", "100"]),
        ("D ndf 64, lr_g 1e-4", ["--lr_g", "1e-4"], ["--ndf", "64"]),
        # not a flag search any more: D gets the batch's std as a feature (gans --minibatch_std)
        ("D minibatch std", ["--minibatch_std", "True"]),
        ("D minibatch std, ndf 64, lr_g 1e-4", ["--minibatch_std", "True", "--lr_g", "1e-4"], ["--ndf", "64"]),
    ],
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", default=",".join(CANDIDATES))
    p.add_argument("--config", default="flags/compare/digits.sh")
    p.add_argument("--minutes", type=float, default=None, help="the comparison budget (default: the config's)")
    p.add_argument("--num_samples", type=int, default=500)
    p.add_argument("--only", default="", help="comma-separated candidate numbers (0 = as-is) to run")
    p.add_argument("--logdir", default="")
    p.add_argument("--reuse", action="store_true", help="skip stages that already finished in --logdir")
    a = p.parse_args(argv)
    config = compare.read_config(os.path.join(ROOT, a.config))
    config["num_samples"] = a.num_samples
    minutes = a.minutes if a.minutes is not None else config["minutes"]
    runs = {r["name"]: r for r in config["runs"]}
    total_share = sum(r["share"] for r in config["runs"])
    out = os.path.abspath(a.logdir or os.path.join(ROOT, "runs", time.strftime("tune-%Y%m%d-%H%M%S")))
    os.makedirs(out, exist_ok=True)
    data_dir = os.path.join(ROOT, config["data_dir"])
    compare.prepare_data(config, data_dir, config["data_root"])
    launcher = compare.pick_launcher(config["nproc"])
    only = {x.strip() for x in a.only.split(",") if x.strip()}
    table = []
    for family in [f for f in a.families.split(",") if f]:
        if family not in runs or family not in CANDIDATES:
            sys.exit(f"tune_digits: no family {family!r} in both {a.config} and CANDIDATES")
        base = runs[family]
        seconds = minutes * 60 * config["train_fraction"] * base["share"] / total_share
        for i, (label, flags, *model) in enumerate(CANDIDATES[family]):
            if only and str(i) not in only:
                continue
            model = model[0] if model else []
            sampler = dict(base["samplers"][0])
            sampler["flags"] = sampler["flags"] + model
            entry = dict(base, name=f"{family}-{i}", train_flags=base["train_flags"] + flags + model,
                         samplers=[sampler])
            flags = flags + model
            load = os.getloadavg()[0]
            res = compare.compare_run(entry, config, out, launcher, seconds, a.reuse,
                                      os.path.join(data_dir, "train"), baseline=False, control=False)
            row = {"family": family, "candidate": label, "flags": " ".join(flags), "budget_s": seconds,
                   "load": load, "steps": res.get("steps")}
            if res["rows"] and "fd_digits" in res["rows"][0]:
                row.update({k: res["rows"][0].get(k) for k in
                            ("fd_digits", "fd_std", "precision", "recall", "kid", "class_accuracy")})
            else:
                row["error"] = "; ".join(f"{w}: {r.get('error')}" for w, r in res["failed"]) or "failed"
            table.append(row)
            print(json.dumps(row), flush=True)
    lines = ["| family | candidate | budget s | steps | FD-digits | precision | recall | KID | class acc. | load |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['candidate']} | {r['budget_s']:.0f} | FAILED: {r['error']} |||||||")
            continue
        acc = f"{r['class_accuracy']:.3f}" if r.get("class_accuracy") is not None else "–"
        lines.append(f"| {r['family']} | {r['candidate']} | {r['budget_s']:.0f} | {r['steps']} | "
                     f"{r['fd_digits']:.1f} ± {r['fd_std']:.1f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['kid']:.4f} | {acc} | {r['load']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    fileio.write_text(os.path.join(out, "tune.md"), text)
    print(f"wrote {os.path.join(out, 'tune.md')}")


if __name__ == "__main__":
    main()
