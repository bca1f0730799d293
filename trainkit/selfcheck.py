"""A tiny training loop that exercises the whole runtime: `python -m trainkit.selfcheck`.

It trains a small autoencoder on an image folder with every runtime piece a family uses
(process group, sharded resumable batches, DDP, EMA, logger with rank-reduced means,
checkpoints, resume, signal handling) and is what the launcher tests drive under mpiexec,
torchrun and multi-node torchrun. It runs trainkit.loop like every family: its `AutoencoderTask`
is the smallest example of what a family supplies.

Test hooks: `--dump` writes each rank's parameters and the data indices it consumed into the
run directory; `--selfkill_rank/--selfkill_step` make a rank SIGKILL itself; `--selfterm_step`
makes rank 0 send itself SIGTERM (a deterministic preemption); `--hold_step N` makes every
rank write `hold_rank{R}.json` (pid, CPUs) into the run directory after step N and wait there
for a stop request, so that a test can stop a run mid-training without a timer; `--selfraise_step` makes rank
--selfkill_rank raise an exception after that step (a bug in one rank).
"""

import json
import os
import signal
import socket
import time

import torch
import torch.nn.functional as F

from . import checkpoint, data, dist, ema, loop, loopflags, optim, precision, run


class TinyAutoencoder(torch.nn.Module):
    def __init__(self, pixels: int, hidden: int = 32):
        super().__init__()
        self.encode = torch.nn.Linear(pixels, hidden)
        self.decode = torch.nn.Linear(hidden, pixels)

    def forward(self, x):
        flat = x.flatten(1)
        return self.decode(torch.tanh(self.encode(flat))).view_as(x)


def parse_args(argv=None):
    p = run.ArgumentParser(description="trainkit self-check: a tiny distributed training loop")
    run.add_run_args(p)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--image_size", type=int, default=16)
    p.add_argument("--batch_size", type=int, default=8, help="per rank")
    p.add_argument("--lr", type=float, default=1e-3)
    loopflags.add_args(p, skip=("precision",), probe=False)  # fp32 only, no probe
    p.set_defaults(max_steps=20, ema_rate="0.99,0.9", log_interval=5, save_interval=10)  # a tiny run
    p.add_argument("--dump", action="store_true")
    p.add_argument("--selfkill_rank", type=int, default=-1)
    p.add_argument("--selfkill_step", type=int, default=-1,
                   help="rank --selfkill_rank kills itself (SIGKILL) after this step; not in a torchrun restart")
    p.add_argument("--selfterm_step", type=int, default=-1)
    p.add_argument("--selfraise_step", type=int, default=-1,
                   help="rank --selfkill_rank raises RuntimeError after this step")
    p.add_argument("--hold_step", type=int, default=-1,
                   help="after this step each rank writes hold_rank{R}.json and waits (up to 120 s) for a signal")
    p.add_argument("--save_delay", type=float, default=0.0,
                   help="seconds each checkpoint takes longer, standing in for a large model's")
    return p.parse_args(argv)


class AutoencoderTask(loop.Task):
    """The selfcheck's family: what a real family supplies to trainkit.loop, and no more."""

    def __init__(self, args, model, batches):
        self.args = args
        self.model = model.to(dist.device())
        self.batches = batches
        self.net = dist.wrap_ddp(self.model)  # broadcasts rank 0's weights: every rank starts equal
        self.opt = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.averages = ema.EMA(self.model, args.ema_rate)
        self.precision = precision.Precision("fp32", dist.device())
        self.start = 0
        self.consumed = []

    def step(self, batch, step, epoch):
        self.consumed.append(self.batches.indices(self.batches.taken - 1).tolist())
        x = batch[0].to(dist.device())
        loss = F.mse_loss(self.net(x + 0.1 * torch.randn_like(x)), x)
        self.opt.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        _, stats = optim.finish_step(self.opt, self.precision, self.model, ema=self.averages)
        done = step + 1
        first_attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0  # torchrun --max-restarts
        if done == self.args.selfkill_step and dist.rank() == self.args.selfkill_rank and first_attempt:
            os.kill(os.getpid(), signal.SIGKILL)
        if done == self.args.selfraise_step and dist.rank() == self.args.selfkill_rank:
            raise RuntimeError(f"selfcheck: rank {dist.rank()} raised after step {done} (--selfraise_step)")
        if done == self.args.hold_step:
            self._hold(done)
        if done == self.args.selfterm_step and dist.is_main():
            with dist.rank_zero_only("selfcheck: SIGTERM"):
                os.kill(os.getpid(), signal.SIGTERM)
        # its reduced mean over ranks proves the reduction
        return {"loss": loss.detach(), "rank": torch.full((), float(dist.rank()), device=dist.device()), **stats}

    def _hold(self, step):
        with open(os.path.join(self.run_dir, f"hold_rank{dist.rank()}.json"), "w") as f:
            json.dump({"step": step, "pid": os.getpid(), "cpus": sorted(os.sched_getaffinity(0))}, f)
        deadline = time.monotonic() + 120  # a test that never signals fails on its checks, not a hang
        while not run.signalled() and time.monotonic() < deadline:
            time.sleep(0.05)

    def state_dicts(self):
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                **ema.save_states(self.model, self.averages)}

    def load_state_dicts(self, ck):
        checkpoint.load_into(self.model, ck.load("model"), ck.path("model"))
        checkpoint.load_optimizer(self.opt, ck.load("opt"), ck.path("opt"))
        ema.load_states(ck, self.model, self.averages)  # the one missing-file policy (trainkit.ema)
        self.start = ck.step

    def modules(self):
        return {"model": self.model}

    def log_extras(self):
        return {"epoch": self.batches.epoch}

    def artefacts(self, run_dir, step):
        time.sleep(self.args.save_delay)  # stands in for a large model's slow checkpoint


@run.main
def main(argv=None):
    args = parse_args(argv)
    r = run.setup("selfcheck", args, resume=args.resume_checkpoint)
    images = data.load_dataset(args.data_dir, args.image_size, channels=1)
    batches = data.Batches(images, args.batch_size, seed=args.seed, random_flip=True)
    task = AutoencoderTask(args, TinyAutoencoder(args.image_size**2), batches)
    task.run_dir = r.dir
    trainer = loop.Loop(r, task, batches, total_steps=args.max_steps, log_interval=args.log_interval,
                        save_interval=args.save_interval, seed=args.seed)
    step = trainer.run_loop()
    if args.dump:
        params = {k: v.cpu() for k, v in task.model.state_dict().items()}
        torch.save(params, os.path.join(r.dir, f"params_rank{dist.rank()}.pt"))
        with open(os.path.join(r.dir, f"indices_rank{dist.rank()}.json"), "w") as f:
            json.dump({"start": task.start, "batches": task.consumed, "threads": torch.get_num_threads(),
                       "host": socket.gethostname()}, f)
    if dist.is_main():
        with dist.rank_zero_only("selfcheck: done line"):
            print(f"done at step {step}", flush=True)  # the logger is closed by the loop


if __name__ == "__main__":
    main()
