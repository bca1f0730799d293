"""A tiny training loop that exercises the whole runtime: `python -m trainkit.selfcheck`.

It trains a small autoencoder on an image folder with every runtime piece a family uses
(process group, sharded resumable batches, DDP, EMA, logger with rank-reduced means,
checkpoints, resume, signal handling) and is what the launcher tests drive under mpiexec,
torchrun and multi-node torchrun. The loop is also the shape every family's loop follows.

Test hooks: `--dump` writes each rank's parameters and the data indices it consumed into the
run directory; `--selfkill_rank/--selfkill_step` make a rank SIGKILL itself; `--selfterm_step`
makes rank 0 send itself SIGTERM (a deterministic preemption).
"""

import json
import os
import signal
import time

import torch
import torch.nn.functional as F

from . import checkpoint, data, dist, ema, run


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
    p.add_argument("--max_steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema_rate", default="0.99,0.9")
    p.add_argument("--log_interval", type=int, default=5)
    p.add_argument("--save_interval", type=int, default=10)
    p.add_argument("--resume_checkpoint", default="")
    p.add_argument("--dump", action="store_true")
    p.add_argument("--selfkill_rank", type=int, default=-1)
    p.add_argument("--selfkill_step", type=int, default=-1,
                   help="rank --selfkill_rank kills itself (SIGKILL) after this step; not in a torchrun restart")
    p.add_argument("--selfterm_step", type=int, default=-1)
    p.add_argument("--save_delay", type=float, default=0.0,
                   help="seconds each checkpoint takes longer, standing in for a large model's")
    return p.parse_args(argv)


def save(r, step, model, opt, averages, batches, delay=0.0):
    time.sleep(delay)
    states = {"model": model.state_dict(), "opt": opt.state_dict()}
    for rate in averages.rates:
        states[f"ema_{ema.rate_name(rate)}_"] = averages.state_dict(rate, model)
    checkpoint.save(r.dir, step, states, {"data": batches.state_dict(), "rng": run.rng_state()})


@run.main
def main(argv=None):
    args = parse_args(argv)
    r = run.setup("selfcheck", args, resume=args.resume_checkpoint)
    images = data.load_dataset(args.data_dir, args.image_size, channels=1)
    batches = data.Batches(images, args.batch_size, seed=args.seed, random_flip=True)
    model = TinyAutoencoder(args.image_size**2).to(dist.device())
    start = 0
    ck = r.resume
    if ck is not None:
        model.load_state_dict(ck.load("model"))
    net = dist.wrap_ddp(model)  # broadcasts rank 0's weights: every rank starts equal
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    averages = ema.EMA(model, args.ema_rate)
    if ck is not None:
        opt.load_state_dict(ck.load("opt"))
        for rate in averages.rates:
            averages.load_state_dict(rate, ck.load(f"ema_{ema.rate_name(rate)}_"))
        batches.load_state_dict(ck.state["data"])
        run.set_rng_state(ck.state["rng"])
        start = ck.step
        r.logger.log(f"resumed from {ck.dir} at step {start}")

    consumed = []
    step = start
    while step < args.max_steps:
        consumed.append(batches.indices(batches.taken).tolist())
        x, _ = next(batches)
        x = x.to(dist.device())
        loss = F.mse_loss(net(x + 0.1 * torch.randn_like(x)), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        averages.update(model)
        step += 1
        r.logger.logkv_mean("loss", loss.item())
        r.logger.logkv_mean("rank", float(dist.rank()))  # its reduced mean proves the reduction
        first_attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0  # torchrun --max-restarts
        if step == args.selfkill_step and dist.rank() == args.selfkill_rank and first_attempt:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == args.selfterm_step and dist.is_main():
            os.kill(os.getpid(), signal.SIGTERM)
        stop = run.should_stop()
        if step % args.log_interval == 0 or stop or step == args.max_steps:
            r.logger.logkv("step", step)
            r.logger.logkv("epoch", batches.epoch)
            r.logger.dumpkvs()
        if step % args.save_interval == 0 or stop or step == args.max_steps:
            save(r, step, model, opt, averages, batches, args.save_delay)
        if stop:
            r.logger.log(run.stopped_message(step, r.dir))
            break

    if args.dump:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, os.path.join(r.dir, f"params_rank{dist.rank()}.pt"))
        with open(os.path.join(r.dir, f"indices_rank{dist.rank()}.json"), "w") as f:
            json.dump({"start": start, "batches": consumed}, f)
    r.logger.log(f"done at step {step}")
    r.logger.close()


if __name__ == "__main__":
    main()
