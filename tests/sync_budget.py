"""Count, on the CPU, the calls of a training step that would block the host on CUDA.

No GPU is needed: the counter records the calls whose CUDA versions wait for the device (a read
of a device value into Python, a copy of host memory onto the device, an op whose output size
depends on device data), whatever device they run on here. Each record is the call site, the
innermost frame of the project's code (file:line), so a failing budget says where to look.

    with SyncCounter() as syncs:
        task.step(batch, 1, 0)
    assert syncs.count <= 2, syncs.report()

What counts (the CUDA reason in brackets):
- Tensor.item / tolist / cpu / numpy, int() / float() / bool() of a tensor [device -> host read];
- torch.tensor / torch.as_tensor of host data (a list, a number, a numpy array) with an explicit
  device, and .to(device) / .cuda() of a tensor made by torch.from_numpy inside the step or of
  anything computed from one [pageable host -> device copy, synchronous];
- torch.bincount / nonzero / unique / masked_select, and indexing with a bool mask [output size
  read from the device].
Not counted: reads of tensors that live on the host on CUDA too (`host=`: an optimizer's step
counts; tensors a factory made without a device; the step's batch as the loader hands it over,
`inputs=`, and its views). Any other read is counted: a budget is an upper bound for CUDA.
"""

import contextlib
import os
import traceback
import weakref

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SELF = os.path.abspath(__file__)

READS = {"item", "tolist", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__"}
SIZE_FROM_DATA = {"bincount", "nonzero", "unique", "masked_select", "argwhere"}
MOVES = {"to", "cuda"}
# a view of the batch (on CUDA a .to(device) of it is a device tensor, but on the CPU it is the
# same object, so a model that checks host labels and asserts device labels asynchronously
# reads them here: gans.dcgan.check_labels is tested on the meta device for that branch)
VIEWS = {"chunk", "split", "unbind", "__getitem__", "narrow", "view", "reshape", "to", "long"}
LABEL_CHECKS = {"aminmax", "min", "max", "amin", "amax", "all", "any", "ge", "gt", "le", "lt", "__ge__",
                "__gt__", "__le__", "__lt__"}
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "rand", "randn",
             "randint", "randperm"}


def _name(func):
    return getattr(func, "__name__", str(func))


def _host_data(x):
    return not isinstance(x, torch.Tensor) and isinstance(x, (list, tuple, int, float, bool, np.ndarray, np.generic))


def call_site():
    """file:line of the innermost project frame (not this file, not torch), else the innermost."""
    frames = traceback.extract_stack()[:-1]
    for f in reversed(frames):
        path = os.path.abspath(f.filename)
        if path.startswith(ROOT + os.sep) and path != _SELF and f"{os.sep}site-packages{os.sep}" not in path:
            return f"{os.path.relpath(path, ROOT)}:{f.lineno}"
    f = frames[-1]
    return f"{f.filename}:{f.lineno}"


class SyncCounter(TorchFunctionMode):
    """A TorchFunctionMode (plus torch.from_numpy patched while it is active) that records each
    would-be CUDA synchronisation as (kind, call site)."""

    def __init__(self, host=(), inputs=()):
        """`host`: tensors that live on the host on CUDA too (an optimizer's step counts), whose
        reads are no synchronisation. `inputs`: the step's batch, whose upload is the loader's
        business; any other tensor made before the context and moved .to(device) inside it (a
        schedule table kept on the host) is counted."""
        super().__init__()
        self.records = []
        # the batch as the loader hands it over, and its views: host tensors (their values are
        # host reads, e.g. a label check before the copy)
        self._inputs = {id(t): weakref.ref(t) for t in inputs}
        self._made = {}  # id -> weakref of every tensor made inside the context
        # tensors holding host (numpy) data made inside the context: id -> weakref (a WeakSet
        # would compare tensors with ==, which is elementwise)
        self._host = {}
        for t in host:
            self._host[id(t)] = weakref.ref(t)
        self._stack = contextlib.ExitStack()

    @property
    def count(self):
        return len(self.records)

    def sites(self):
        """{call site: [kinds...]} in first-seen order."""
        out = {}
        for kind, site in self.records:
            out.setdefault(site, []).append(kind)
        return out

    def report(self):
        lines = [f"{len(self.records)} host-device synchronisation(s):"]
        lines += [f"  {site}: {', '.join(kinds)}" for site, kinds in self.sites().items()]
        return "\n".join(lines)

    def _record(self, kind):
        self.records.append((kind, call_site()))

    def __enter__(self):
        original = torch.from_numpy
        host = self._host

        def from_numpy(a):
            t = original(a)
            host[id(t)] = weakref.ref(t)
            return t

        self._stack.enter_context(_patched(torch, "from_numpy", from_numpy))
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._stack.close()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        first = args[0] if args else None
        if name in READS and isinstance(first, torch.Tensor) and not self._is_host(first) \
                and not _known(self._inputs, first):
            self._record(f"{name}()")
        elif name in SIZE_FROM_DATA:
            self._record(f"torch.{name}")
        elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None and _host_data(first):
            self._record(f"torch.{name}(host {type(first).__name__}, device=)")
        elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None and self._is_host(first):
            self._record(f"torch.{name}(host tensor, device=)")
        elif name == "__getitem__" and isinstance(args[1] if len(args) > 1 else None, torch.Tensor) \
                and args[1].dtype == torch.bool:
            self._record("bool-mask indexing")
        elif name in MOVES and isinstance(first, torch.Tensor) and _moves_device(args, kwargs):
            if self._is_host(first) and not first.is_pinned():  # from pinned memory it is queued
                self._record(f"host tensor .{name}(device)")
            elif not _known(self._made, first) and not _known(self._inputs, first) and not kwargs.get("non_blocking"):
                self._record(f"pre-step tensor .{name}(device)")
        out = func(*args, **kwargs)
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self._made[id(t)] = weakref.ref(t)
        if isinstance(first, torch.Tensor) and _known(self._inputs, first) and name in LABEL_CHECKS \
                and not first.is_floating_point():
            # a check of the batch's labels computes on the host
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    self._host[id(t)] = weakref.ref(t)
        if isinstance(first, torch.Tensor) and _known(self._inputs, first) and name in VIEWS:
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    self._inputs[id(t)] = weakref.ref(t)
        if isinstance(out, torch.Tensor):
            if name in FACTORIES and kwargs.get("device") is None:
                self._host[id(out)] = weakref.ref(out)  # made on the host: a later .to(device) copies
        # what is computed from host data is host data (a .long() of from_numpy's tensor, ...)
        if isinstance(first, torch.Tensor) and self._is_host(first) and isinstance(out, torch.Tensor) \
                and not (name in MOVES and _moves_device(args, kwargs)):
            self._host[id(out)] = weakref.ref(out)
        return out

    def _is_host(self, t):
        return _known(self._host, t)


def _known(table, t):
    ref = table.get(id(t))
    return ref is not None and ref() is t


def optimizer_host_state(obj):
    """The per-parameter `step` tensors of every torch.optim optimizer among `obj`'s attributes:
    torch keeps them on the host unless the optimizer is fused or capturable (Adam's
    `_get_value(step)` reads them with .item() on every step, no device sync)."""
    out = []
    for value in vars(obj).values():
        if isinstance(value, torch.optim.Optimizer):
            for state in value.state.values():
                step = state.get("step")
                if isinstance(step, torch.Tensor) and not value.defaults.get("fused") \
                        and not value.defaults.get("capturable"):
                    out.append(step)
    return out


def _moves_device(args, kwargs):
    if kwargs.get("device") is not None:
        return True
    return any(isinstance(a, (torch.device, str)) or (isinstance(a, torch.Tensor)) for a in args[1:])


@contextlib.contextmanager
def _patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)
