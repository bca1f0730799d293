"""train_ddgan.py's experiment folder, `./saved_info/dd_gan/{dataset}/{exp}/`, and its files.

With `--exp NAME` and no --logdir the run directory is that folder, so trainkit's checkpoints,
options.json and logs live there, and at the end of epoch e (numbered from 0, as the reference)
rank 0 also writes the reference's own files:

- `sample_discrete_epoch_{e}.png`: the generator (raw weights, as the reference samples during
  training) run from fresh x_T for one per-rank batch;
- `xpos_epoch_{e}.png` every 10 epochs: the last posterior samples the generator step made;
- `content.pth` every --save_content_every epochs with --save_content: the reference's resume
  dict (epoch + 1, global_step, args, netG_dict, optimizerG, schedulerG, netD_dict, optimizerD,
  schedulerD), the networks' keys prefixed `module.` as DistributedDataParallel saves them;
- `netG_{e}.pth` every --save_ckpt_every epochs: the generator's state_dict (EMA weights with
  --use_ema), keys prefixed `module.`, which test_ddgan.py strips before a strict load.

Images are min-max normalised over the batch, as torchvision's save_image(normalize=True). The
training RNG is untouched: the sample's x_T, z and posterior noise come from a generator of its
own seeded from (--seed, epoch), so a run with these files trains the same bits as one without.
Every file is written to a temporary name and renamed.

`--exp NAME --resume` continues the folder's newest checkpoint of this project. A folder holding
netG_*.pth or content.pth but no checkpoint of ours was written by the reference's code: it is
never written into.
"""

import argparse
import math
import os
import re
import warnings

import torch

from trainkit import checkpoint, dist
from trainkit.errors import UserError
from trainkit.fileio import atomic_path

ROOT = os.path.join("saved_info", "dd_gan")
REFERENCE_FILE = re.compile(r"^(netG_\d+\.pth|content\.pth)$")
XPOS_EVERY = 10  # the reference writes xpos_epoch_N.png when epoch % 10 == 0


def folder(dataset: str, exp: str) -> str:
    if not exp or "/" in exp or exp in (".", ".."):
        raise UserError(f"--exp {exp!r}: an experiment name must be one folder name")
    return os.path.join(ROOT, dataset, exp)


def check_folder(path: str) -> None:
    """Refuse a folder of the reference's (its files, none of our checkpoints): nothing of
    this run may overwrite them."""
    if not os.path.isdir(path) or checkpoint.steps(path):
        return
    theirs = sorted(n for n in os.listdir(path) if REFERENCE_FILE.match(n))
    if theirs:
        raise UserError(f"{path}: holds {', '.join(theirs[:3])} but no checkpoint of this project (written by "
                        "train_ddgan.py?); training here would overwrite them: choose another --exp")


def module_keys(state_dict: dict) -> dict:
    """A state_dict as DistributedDataParallel saves it: every key prefixed `module.`."""
    return {"module." + k: v for k, v in state_dict.items()}


def scheduler_state(base_lr: float, num_epoch: int, epochs_done: int, decay: bool) -> dict:
    """What the reference's CosineAnnealingLR(T_max=num_epoch, eta_min=1e-5) holds after
    `epochs_done` steps, taken from a real scheduler over a scratch optimizer."""
    # imported here: ddgan.task imports ddgan.sample (its draw), which imports this module
    from .task import ETA_MIN

    scratch = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=base_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(scratch, T_max=num_epoch, eta_min=ETA_MIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": nothing trains here
        for _ in range(epochs_done if decay else 0):
            sched.step()
    return sched.state_dict()


def _save_png(images: torch.Tensor, path: str) -> None:
    from torchvision.utils import save_image

    with atomic_path(path) as tmp:
        save_image(images.float().cpu(), tmp, nrow=int(math.ceil(math.sqrt(len(images)))), normalize=True,
                   format="png")


def _save_torch(obj, path: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class ExperimentFiles:
    """The reference's per-epoch files for one run (see the module docstring)."""

    def __init__(self, o: dict, logger=None):
        self.o = o
        self.logger = logger

    @torch.no_grad()
    def sample(self, trainer, shape, epoch: int) -> torch.Tensor:
        gen = torch.Generator(device="cpu").manual_seed(int(self.o["seed"]) * 1_000_003 + epoch)

        def randn(*s):
            return torch.randn(shape[0], *s, generator=gen)

        x_init = randn(*shape[1:]).to(trainer.device)
        return trainer.diffusion.sample(trainer.g_raw, x_init, self.o["nz"], randn=randn)

    def epoch_end(self, trainer, run_dir: str, epoch: int, step: int) -> None:
        """Called on every rank after the last step of `epoch`; rank 0 writes."""
        if not dist.is_main():
            return
        with dist.rank_zero_only("ddgan: epoch-end images"):
            o = self.o
            if epoch % XPOS_EVERY == 0 and trainer.last_x_pos is not None:
                _save_png(trainer.last_x_pos, os.path.join(run_dir, f"xpos_epoch_{epoch}.png"))
            fake = self.sample(trainer, trainer.last_x_pos.shape, epoch)
            _save_png(fake, os.path.join(run_dir, f"sample_discrete_epoch_{epoch}.png"))
            if self.logger is not None and hasattr(self.logger, "log_image"):
                from torchvision.utils import make_grid

                grid = make_grid(fake.float().cpu(), nrow=int(math.ceil(math.sqrt(len(fake)))), normalize=True)
                self.logger.log_image("sample_discrete", (grid * 255).round().to(torch.uint8).numpy(), step)
            if o["save_content"] and epoch % o["save_content_every"] == 0:
                self.save_content(trainer, run_dir, epoch, step)
            if epoch % o["save_ckpt_every"] == 0:
                weights = (trainer.ema.state_dict(o["ema_decay"], trainer.g_raw) if trainer.ema is not None
                           else trainer.g_raw.state_dict())
                _save_torch(module_keys(weights), os.path.join(run_dir, f"netG_{epoch}.pth"))

    def save_content(self, trainer, run_dir: str, epoch: int, step: int) -> None:
        o, decay = self.o, not self.o["no_lr_decay"]
        content = {
            "epoch": epoch + 1, "global_step": step, "args": argparse.Namespace(**o),
            "netG_dict": module_keys(trainer.g_raw.state_dict()), "optimizerG": trainer.opt_g.state_dict(),
            "schedulerG": scheduler_state(o["lr_g"], o["num_epoch"], epoch + 1, decay),
            "netD_dict": module_keys(trainer.d_raw.state_dict()), "optimizerD": trainer.opt_d.state_dict(),
            "schedulerD": scheduler_state(o["lr_d"], o["num_epoch"], epoch + 1, decay),
        }
        _save_torch(content, os.path.join(run_dir, "content.pth"))
