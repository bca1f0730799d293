"""Exponential moving averages of a model's parameters, at one or more rates.

`--ema_rate 0.9999,0.999` keeps one shadow copy per rate. Each is saved as a state_dict in the
model's own layout (buffers such as BatchNorm statistics are taken from the live model, as
openai does), so an `ema_0.9999_*.pt` file loads into the model with `strict=True` and every
sampler can use it directly.
"""

import torch

from .errors import UserError


def parse_rates(rates) -> list:
    """'0.9999,0.999' -> [0.9999, 0.999]; '' -> []. Each rate must lie in [0, 1)."""
    if isinstance(rates, (int, float)):
        rates = [rates]
    if isinstance(rates, str):
        rates = [r for r in rates.replace(" ", "").split(",") if r]
    out = []
    for r in rates:
        try:
            v = float(r)
        except ValueError:
            raise UserError(f"--ema_rate: {r!r} is not a number") from None
        if not 0.0 <= v < 1.0:
            raise UserError(f"--ema_rate: {r} is outside [0, 1)")
        out.append(v)
    return out


def rate_name(rate: float) -> str:
    """The text used in file names: openai writes the rate as it was given, e.g. 0.9999."""
    return repr(float(rate))


class EMA:
    def __init__(self, model: torch.nn.Module, rates, copy_first: bool = False):
        """`copy_first`: the first `update` copies the weights instead of averaging them (DDGAN's
        reference starts its EMA from the weights after the first optimizer step); a loaded
        state is such a start too."""
        self.rates = parse_rates(rates)
        self._copy_next = bool(copy_first)
        self.names = [n for n, p in model.named_parameters()]
        self.shadows = {
            rate: [p.detach().clone() for p in model.parameters()] for rate in self.rates
        }

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        params = [p.detach() for p in model.parameters()]
        if self._copy_next:
            self._copy_next = False
            for shadow in self.shadows.values():
                for s, p in zip(shadow, params):
                    s.copy_(p)
            return
        for rate, shadow in self.shadows.items():
            # shadow <- rate * shadow + (1 - rate) * param, in one fused call per rate
            torch._foreach_lerp_(shadow, params, 1.0 - rate)

    def state_dict(self, rate: float, model: torch.nn.Module) -> dict:
        """The model's state_dict with its parameters replaced by this rate's averages."""
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name, value in zip(self.names, self.shadows[rate]):
            sd[name] = value.detach().clone()
        return sd

    @torch.no_grad()
    def load_state_dict(self, rate: float, state_dict: dict) -> None:
        missing = [n for n in self.names if n not in state_dict]
        if missing:
            raise UserError(f"EMA {rate}: checkpoint lacks parameters {', '.join(missing[:5])}")
        for name, shadow in zip(self.names, self.shadows[rate]):
            shadow.copy_(state_dict[name])
        self._copy_next = False

    @torch.no_grad()
    def copy_to(self, rate: float, model: torch.nn.Module) -> None:
        for p, s in zip(model.parameters(), self.shadows[rate]):
            p.copy_(s)
