"""A toy Task for the loop's tests: one parameter, a loss scripted per step."""

import torch

from trainkit import checkpoint, loop


class Scalar(loop.Task):
    """A one-parameter 'family': its loss is what `losses` says at each step."""

    def __init__(self, losses=()):
        self.w = torch.nn.Linear(1, 1, bias=False)
        self.losses = list(losses)
        self.steps = []

    def step(self, batch, step, epoch):
        self.steps.append(step)
        with torch.no_grad():
            self.w.weight.add_(1.0)
        value = self.losses[step] if step < len(self.losses) else 1.0
        return {"loss": torch.tensor(value)}

    def state_dicts(self):
        return {"model": self.w.state_dict()}

    def load_state_dicts(self, ck):
        checkpoint.load_into(self.w, ck.load("model"), ck.path("model"))

    def modules(self):
        return {"model": self.w}


def ddgan_networks(o: dict, seed: int = 0):
    """(G, D) of DDGAN for the options `o`, with weights drawn at N(0, 0.3): a fresh init is ~0 at
    the outputs, random weights give real gradients (the Task and fp16 tests need them)."""
    from ddgan.discriminator import DiscriminatorSmall
    from ddgan.ncsnpp import GeneratorConfig, NCSNpp

    torch.manual_seed(seed)
    g = NCSNpp(GeneratorConfig.from_options(o))
    d = DiscriminatorSmall(nc=2, ngf=o["ngf"], t_emb_dim=o["t_emb_dim"])
    with torch.no_grad():
        for p in list(g.parameters()) + list(d.parameters()):
            p.normal_(0, 0.3)
    return g, d
