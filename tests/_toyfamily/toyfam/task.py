"""The toy family's Task: a linear generator from 8 noise numbers to a 16x16 grey image, trained
to match random training images (it learns their mean and a little spread)."""

import torch
import torch.nn.functional as F

from trainkit import checkpoint, dist, ema, loop, optim, precision

NZ = 8


class Generator(torch.nn.Module):
    def __init__(self, size):
        super().__init__()
        self.size = size
        self.net = torch.nn.Linear(NZ, size * size)

    def forward(self, z):
        return torch.tanh(self.net(z)).view(-1, 1, self.size, self.size)


def draw(G, rnd):
    """uint8 N,H,W,1 images of the samples of `rnd` (trainkit.sampling.PerSampleRandom)."""
    from trainkit import npz

    with torch.no_grad():
        return npz.to_uint8(G(rnd.randn(NZ))), None


class Task(loop.Task):
    loss_keys = ("loss",)

    def __init__(self, args, G):
        self.G = G.to(dist.device())
        self.opt = torch.optim.Adam(self.G.parameters(), lr=args.lr)
        self.averages = ema.EMA(self.G, args.ema_rate)
        self.precision = precision.Precision("fp32", dist.device())

    def step(self, batch, step, epoch):
        x = batch[0].to(dist.device())
        loss = F.mse_loss(self.G(torch.randn(len(x), NZ, device=x.device)), x)
        self.opt.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        _, stats = optim.finish_step(self.opt, self.precision, self.G, ema=self.averages)
        return {"loss": loss.detach(), **stats}

    def state_dicts(self):
        return {"model": self.G.state_dict(), "opt": self.opt.state_dict(), **ema.save_states(self.G, self.averages)}

    def load_state_dicts(self, ck):
        checkpoint.load_into(self.G, ck.load("model"), ck.path("model"))
        checkpoint.load_optimizer(self.opt, ck.load("opt"), ck.path("opt"))
        ema.load_states(ck, self.G, self.averages)

    def modules(self):
        return {"model": self.G}


def build_task(args):
    return Task(args, Generator(args.image_size))
