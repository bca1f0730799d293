"""--precision fp32 | fp16 | bf16 in a few lines, the same for every family.

fp16 is autocast plus a dynamic loss scale: parameters and optimizer state stay fp32 (the
"master weights"), a step whose gradients overflow is skipped and the scale lowered, and the
scale is saved with the checkpoint so a resumed run does not start the search over. bf16 needs
no scaling. fp32 is a pass-through.
"""

import contextlib

import torch

from .errors import UserError

MODES = ("fp32", "fp16", "bf16")


class Precision:
    def __init__(self, mode: str, device, init_scale: float = 2.0**16, growth_interval: int = 2000):
        if mode not in MODES:
            raise UserError(f"--precision: {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.device = torch.device(device)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=(mode == "fp16"), init_scale=init_scale, growth_interval=growth_interval
        )
        self._scale_seen = None  # the scale read after the last step (a float on the host)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale_(self, optimizer) -> None:
        """Bring gradients back to their true size (before clipping or measuring them)."""
        self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> bool:
        """Optimizer step; False when fp16 found inf/NaN gradients and skipped it."""
        if not self.scaler.is_enabled():
            optimizer.step()
            return True
        # get_scale() reads the scale back from the device (a synchronisation on CUDA): read it
        # once per step, after the update, and remember it as the next step's "before". The
        # scale only changes in update(), which only this method calls.
        before = self._scale_seen if self._scale_seen is not None else self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        self._scale_seen = self.scaler.get_scale()
        return self._scale_seen >= before

    @property
    def scale(self) -> float:
        """The loss scale as of the last step (no device read when a step has run)."""
        if not self.scaler.is_enabled():
            return 1.0
        return float(self._scale_seen if self._scale_seen is not None else self.scaler.get_scale())

    def state_dict(self) -> dict:
        return {"mode": self.mode, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
            self._scale_seen = None


# --- the loss-scale state of a Task's optimizers, in the state file and the log ------------------
# One layout for every family: trainer_state["precision"] = {<optimizer name>: Precision state},
# e.g. {"g": ..., "d": ...} for a GAN, {"model": ...} for one optimizer, and one logged key per
# optimizer, loss_scale_<name>. Older state files still load: gans' {"g", "d"} is this layout
# already, DDGAN's `precision_d` / `precision_g` keys and improved_diffusion's bare `precision`
# (one Precision state) are read as the optimizers they belong to.


def state_dict(scalers: dict) -> dict:
    """{name: Precision.state_dict()} for trainer_state["precision"]."""
    return {name: p.state_dict() for name, p in scalers.items()}


def _is_one_state(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("mode"), str)


def saved_states(trainer_state) -> dict:
    """{optimizer name: Precision state} from a state file in any of the layouts (empty for an
    adopted openai step or a state file without loss scales)."""
    state = trainer_state or {}
    found = {k[len("precision_"):]: v for k, v in state.items()
             if k.startswith("precision_") and _is_one_state(v)}
    entry = state.get("precision")
    if _is_one_state(entry):
        found[None] = entry  # the bare layout: one optimizer, name not recorded
    elif isinstance(entry, dict):
        found.update({k: v for k, v in entry.items() if _is_one_state(v)})
    return found


def load_state_dict(scalers: dict, trainer_state) -> None:
    """Restore each scaler's loss scale from the trainer state (any layout, see saved_states).
    A scaler the state does not name keeps its fresh scale; the bare layout goes to a Task with
    one optimizer and is refused, in one line, for one with several (whose would it be?)."""
    saved = saved_states(trainer_state)
    if None in saved:
        if len(scalers) != 1:
            raise UserError(f"the state file holds one loss scale (the layout with a bare 'precision') for "
                            f"{len(scalers)} optimizers ({', '.join(scalers)}); it cannot say whose it is")
        saved[next(iter(scalers))] = saved.pop(None)
    for name, p in scalers.items():
        if name in saved:
            p.load_state_dict(saved[name])


def log_values(scalers: dict) -> dict:
    """{loss_scale_<name>: scale} of the fp16 scalers, for a Task's log_extras (fp32 and bf16
    keep no scale: nothing is logged)."""
    return {f"loss_scale_{name}": p.scale for name, p in scalers.items() if p.mode == "fp16"}
