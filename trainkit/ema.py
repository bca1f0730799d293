"""Exponential moving averages of a model's parameters, at one or more rates.

`--ema_rate 0.9999,0.999` keeps one shadow copy per rate. Each is saved as a state_dict in the
model's own layout (buffers such as BatchNorm statistics are taken from the live model, as
openai does), so an `ema_0.9999_*.pt` file loads into the model with `strict=True` and every
sampler can use it directly.

Saving and loading go through one pair for every family and every kind of average (fixed rates,
StyleGAN2-ADA's half-life, the power-function profiles of trainkit.phema): `save_states(model,
*averages)` gives the checkpoint files, `averages_state(*averages)` the trainer-state entries,
`load_states(ck, model, *averages, log=...)` restores both.

Missing-file policy on resume (one for all): an average whose file the checkpoint lacks
restarts from the model's current (just loaded) weights, and one line naming the file and the
step is logged. Why not raise: adding a rate to a run, resuming openai's folder or a step saved
without that average are legitimate, and a refusal would leave no way on but retraining; the
restarted average starts from trained weights, not the initial noise, so it is usable at once.
Why not silently: the average then covers only the steps since the resume, which the person
reading the log must be able to see.
"""

import argparse
import sys

import torch

from . import checkpoint, dist
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


def rates_arg(text: str) -> str:
    """The argparse type of --ema_rate: a comma list of rates in [0, 1) ('' for none), checked
    by parse_rates and kept as the text (openai's runs save it as given in options.json)."""
    try:
        parse_rates(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--ema_rate: ")) from None
    return text


def rate_name(rate: float) -> str:
    """The text used in file names: openai writes the rate as it was given, e.g. 0.9999."""
    return repr(float(rate))


def prefix(rate: float) -> str:
    """The checkpoint prefix of a fixed-rate average: ema_0.9999_ (openai's file names)."""
    return f"ema_{rate_name(rate)}_"


def rates_in(prefixes) -> dict:
    """{rate: prefix} of the fixed-rate averages among checkpoint prefixes (ema_0.9999_ ...;
    ema_kimg..._ and other names that are not a rate are skipped)."""
    rates = {}
    for p in prefixes:
        if p.startswith("ema_") and p.endswith("_"):
            try:
                rates[float(p[4:-1])] = p
            except ValueError:
                continue
    return rates


def averaged_state_dict(model: torch.nn.Module, names, values) -> dict:
    """The model's state_dict (copied) with the parameters `names` replaced by an average's
    `values`: buffers such as BatchNorm statistics are the live model's, as openai saves them."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, value in zip(names, values):
        sd[name] = value.detach().clone()
    return sd


def log_default(line: str) -> None:
    if dist.is_main():
        with dist.rank_zero_only("ema: log line"):
            print(line, file=sys.stderr, flush=True)


@torch.no_grad()
def load_average(shadow, names, ck, prefix, model, log, what) -> None:
    """One average's parameters from the step's `prefix` file (a wrapper's `module.` keys taken
    off, every key and shape checked against the model), or, when the step has no such file, the
    model's current weights with one logged line: the module docstring's missing-file policy."""
    if ck.has(prefix):
        sd = checkpoint.checked_state_dict(model, ck.load(prefix), ck.path(prefix), what=what)
        values = [sd[n] for n in names]
    else:
        (log or log_default)(f"no {checkpoint.filename(prefix, ck.step)} at step {ck.step}: {what} restarts "
                              "from the model weights")
        values = [p.detach() for p in model.parameters()]
    for s, v in zip(shadow, values):
        s.copy_(v)


class EMA:
    def __init__(self, model: torch.nn.Module, rates, copy_first: bool = False):
        """`copy_first`: the first `update` copies the weights instead of averaging them (DDGAN's
        reference starts its EMA from the weights after the first optimizer step); a loaded
        state is such a start too."""
        self.rates = parse_rates(rates)
        self.state_key = None  # nothing in the trainer state: the files are all of it
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
        return averaged_state_dict(model, self.names, self.shadows[rate])

    @torch.no_grad()
    def load_state_dict(self, rate: float, state_dict: dict) -> None:
        missing = [n for n in self.names if n not in state_dict]
        if missing:
            raise UserError(f"EMA {rate}: checkpoint lacks parameters {', '.join(missing[:5])}")
        for name, shadow in zip(self.names, self.shadows[rate]):
            shadow.copy_(state_dict[name])
        self._copy_next = False

    def files(self, model: torch.nn.Module) -> dict:
        """{ema_<rate>_: the model's state_dict with this rate's averages} for a checkpoint."""
        return {prefix(rate): self.state_dict(rate, model) for rate in self.rates}

    @torch.no_grad()
    def load(self, ck, model: torch.nn.Module, log) -> None:
        for rate, shadow in self.shadows.items():
            load_average(shadow, self.names, ck, prefix(rate), model, log, f"EMA {rate}")
        self._copy_next = False


class HalfLifeEMA:
    """StyleGAN2-ADA's generator average (Karras et al. 2020): a half-life in images, not a rate.

    Each step β = 0.5^(batch / ema_nimg), ema_nimg = ema_kimg·1000 images, `batch` the images of
    the whole step (all ranks); with a ramp-up r, ema_nimg = min(ema_nimg, cur_nimg·r), cur_nimg
    the images seen before the step, so the average is short while training is young (the first
    step copies the weights) and its half-life never exceeds a share r of training so far."""

    def __init__(self, model: torch.nn.Module, kimg: float, rampup, images_per_step: int):
        if not kimg > 0:
            raise UserError(f"--ema_kimg {kimg}: must be positive (0 turns the average off)")
        if rampup is not None and rampup < 0:
            raise UserError(f"--ema_rampup {rampup}: must be 0 (none) or positive")
        self.state_key = "halflife_ema"  # its entry in the trainer state
        self.kimg = float(kimg)
        self.rampup = float(rampup) if rampup else None
        self.images_per_step = int(images_per_step)
        self.nimg = 0  # cur_nimg: images seen by the steps averaged so far
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().clone() for p in model.parameters()]

    @property
    def prefix(self) -> str:
        return f"ema_kimg{self.kimg!r}_"

    def beta(self) -> float:
        ema_nimg = self.kimg * 1000
        if self.rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * self.rampup)
        return 0.5 ** (self.images_per_step / max(ema_nimg, 1e-8))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        beta = self.beta()
        torch._foreach_lerp_(self.shadow, [p.detach() for p in model.parameters()], 1.0 - beta)
        self.nimg += self.images_per_step

    def files(self, model: torch.nn.Module) -> dict:
        return {self.prefix: averaged_state_dict(model, self.names, self.shadow)}

    def state(self) -> dict:
        return {"nimg": int(self.nimg), "kimg": self.kimg}

    @torch.no_grad()
    def load(self, ck, model: torch.nn.Module, log) -> None:
        """From a trainkit Checkpoint: the images seen from the state file, the average from its
        file (the missing-file policy of the module docstring)."""
        self.nimg = int(((ck.state or {}).get(self.state_key) or {}).get("nimg", 0))
        load_average(self.shadow, self.names, ck, self.prefix, model, log, "the generator average")


class Chain:
    """Several averages of one model updated together (what optim.finish_step's `ema` calls)."""

    def __init__(self, *averages):
        self.averages = [a for a in averages if a is not None]

    def __bool__(self):
        return bool(self.averages)

    def update(self, model: torch.nn.Module) -> None:
        for a in self.averages:
            a.update(model)


def settled_rate(rates, step: int):
    """The highest rate whose share of the initial weights, rate**step, is under 1%, or None."""
    settled = [r for r in rates if r ** max(step, 0) < 0.01]
    return max(settled) if settled else None


def choose_sample_weights(step: int, fixed=None, halflife=None, power=None, settle=True) -> str:
    """The prefix a sampler should use, the same rule for the GAN families: the half-life average
    when there is one (it ramps up from the first step, so it is always usable); else the highest
    settled fixed rate (improved_diffusion's rule; `settle=False`: the first rate, DDGAN's
    reference samples its EMA whatever the step); else the first power-function profile; else
    the raw model."""
    if halflife is not None:
        return halflife.prefix
    if fixed is not None and fixed.rates:
        rate = settled_rate(fixed.rates, step) if settle else fixed.rates[0]
        if rate is not None:
            return prefix(rate)
    if power is not None and power.stds:
        return power.prefix(power.stds[0])
    return "model"


def save_states(model: torch.nn.Module, *averages) -> dict:
    """The checkpoint files of every average of `model` ({prefix: state_dict in the model's
    layout}), for a Task's state_dicts(); None averages are skipped."""
    files = {}
    for average in averages:
        if average is not None:
            files.update(average.files(model))
    return files


def averages_state(*averages) -> dict:
    """The trainer-state entries of the averages that keep one (images seen), for a Task's
    trainer_state()."""
    return {a.state_key: a.state() for a in averages if a is not None and a.state_key}


def load_states(ck, model: torch.nn.Module, *averages, log=None) -> None:
    """Restore every average of `model` from a trainkit Checkpoint, after the model's own
    weights were loaded: an average whose file the step lacks restarts from them, with one
    logged line (`log`, else stderr on rank 0): the module docstring says why."""
    for average in averages:
        if average is not None:
            average.load(ck, model, log)


def add_halflife_args(parser):
    """--ema_kimg / --ema_rampup: the GAN families' generator average (HalfLifeEMA)."""
    parser.add_argument("--ema_kimg", type=float, default=0.0,
                        help="half-life of a generator average in thousands of images (StyleGAN2-ADA's ema_kimg; "
                             "its auto config uses batch*10/32); sampled by default; 0 = off")
    parser.add_argument("--ema_rampup", type=float, default=0.05,
                        help="with --ema_kimg: the half-life is at most this share of the images seen so far "
                             "(StyleGAN2-ADA's ema_rampup; 0 = no ramp-up)")
    return parser
