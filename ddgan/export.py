"""Write a generator checkpoint in the original repository's layout: `netG_<epoch>.pth`.

  python -m ddgan.export --model_path RUN_DIR_OR_CHECKPOINT --out saved_info/dd_gan/cifar10/exp/netG_1200.pth

The original saves `netG.state_dict()` of the DDP-wrapped generator (keys prefixed `module.`,
EMA weights swapped in when trained with --use_ema) and its test_ddgan.py drops the first 7
characters of every key when loading, so the prefix is required there. The file holds tensors
only. --weights auto|ema|raw as for ddgan.sample.
"""

import blobfile as bf
import torch

from trainkit import checkpoint, run
from trainkit.errors import UserError
from trainkit.fileio import atomic_path

from .sample import named_weights, pick_weights


def create_parser():
    p = run.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_path", required=True,
                   help="a ddgan.train run directory (its newest step) or a checkpoint file of one step")
    p.add_argument("--out", required=True,
                   help="the netG_<epoch>.pth to write (must not exist); keys prefixed module. as the reference's")
    p.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                   help="EMA or raw generator weights (auto: EMA when the step has it, as the reference's --use_ema)")
    return p


def export(model_path, out, weights="auto"):
    if bf.exists(out):
        raise UserError(f"--out {out}: already exists; not overwriting it (choose another path)")
    ck = checkpoint.resolve(model_path)
    _, path = pick_weights(ck, weights, named=named_weights(model_path))
    sd = checkpoint.strip_wrapper_prefixes(checkpoint.load(path))
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise UserError(f"{path}: not a generator state_dict")
    with atomic_path(out) as tmp:
        torch.save({"module." + k: v for k, v in sd.items()}, tmp)
    return path


@run.main
def main():
    args = create_parser().parse_args()
    src = export(args.model_path, args.out, args.weights)
    print(f"wrote {args.out} from {src}")


if __name__ == "__main__":
    main()
