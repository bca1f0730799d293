"""Per-step statistics: what each step's `stats` add up to, summed on the device and read back
once per log row, and the first step whose statistics were not finite (for the stop vote)."""

import torch

_NO_BAD_STEP = -1
_BAD_BASE = 2**62  # the vote encodes "first non-finite step s" as BASE - s: MAX then finds the earliest


def first_bad_step(code: int):
    """The step that `StepStats.bad_code` (reduced by MAX over ranks) encodes, or None for 0."""
    return _BAD_BASE - int(code) if code else None


class StepStats:
    """Per-step statistics summed on the device; read back once per log interval.

    Steps with the same keys share one vector of sums and one of counts, so a step costs a few
    small tensor operations whatever the number of keys. A step with any value that is not
    finite is left out of the sums, and the first such step is remembered (on the device).
    """

    def __init__(self):
        self._acc = {}  # keys -> [sums, counts] (float64 vectors)
        self._ones = {}
        self.first_bad = None  # 0-dim int64 tensor: the first non-finite step, or -1

    def add(self, stats: dict, step: int) -> None:
        if not stats:
            return
        keys = tuple(stats)
        pairs = [v if isinstance(v, tuple) else (v, None) for v in stats.values()]
        device = next((s.device for s, _ in pairs if torch.is_tensor(s)), torch.device("cpu"))
        vec = torch.stack([torch.as_tensor(s, device=device).detach().float().reshape(()) for s, _ in pairs]).double()
        if all(n is None for _, n in pairs):
            cnt = self._ones.get((keys, device))
            if cnt is None:
                cnt = self._ones[(keys, device)] = torch.ones(len(keys), dtype=torch.float64, device=device)
        else:
            one = torch.ones((), dtype=torch.float64, device=device)
            cnt = torch.stack([one if n is None else n.detach().double().reshape(()).to(device) for _, n in pairs])
        ok = torch.isfinite(vec).all()
        if self.first_bad is None:
            self.first_bad = torch.full((), _NO_BAD_STEP, dtype=torch.int64, device=device)
        self.first_bad = torch.where(~ok & (self.first_bad < 0), torch.full_like(self.first_bad, step),
                                     self.first_bad)
        acc = self._acc.get(keys)
        if acc is None:
            acc = self._acc[keys] = [torch.zeros_like(vec), torch.zeros_like(cnt)]
        zero = torch.zeros((), dtype=torch.float64, device=device)
        acc[0] += torch.where(ok, vec, zero)
        acc[1] += torch.where(ok, cnt, zero)

    def bad_code(self) -> int:
        """BASE - (first non-finite step), or 0 when every step was finite (read: one sync)."""
        if self.first_bad is None:
            return 0
        s = int(self.first_bad)
        return _BAD_BASE - s if s >= 0 else 0

    def pop(self) -> dict:
        """{key: (sum, count)} as floats since the last pop; resets the sums."""
        out = {}
        for keys, (sums, counts) in self._acc.items():
            pairs = torch.stack([sums, counts]).cpu().tolist()
            for k, s, n in zip(keys, *pairs):
                total, count = out.get(k, (0.0, 0.0))
                out[k] = (total + s, count + n)
        self._acc.clear()
        return out

    def clear_bad(self) -> None:
        self.first_bad = None
