"""Assertions tests share: a process that must have succeeded, checkpoint contents bit for bit."""

import torch

import helpers


def ok(proc):
    """`proc`, after asserting it exited 0 (its output in the message otherwise)."""
    assert proc.returncode == 0, helpers.describe(proc)
    return proc


def assert_same(a, b, where=""):
    """Bitwise equality of checkpoint contents (tensors, dicts, lists, numbers, strings)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: values differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
