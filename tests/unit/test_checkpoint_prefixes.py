"""torch.compile's and DDP's wrapper prefixes are taken off a state dict when it is read (from
tests/e2e/test_compile.py, whose compiled runs write them)."""

import torch

from trainkit import checkpoint


def test_wrapper_prefixes_are_taken_off_when_read():
    sd = {"_orig_mod.module.w": torch.zeros(1), "_orig_mod.module.b": torch.zeros(1)}
    assert sorted(checkpoint.strip_wrapper_prefixes(sd)) == ["b", "w"]
    net = torch.nn.Linear(2, 1)
    prefixed = {f"_orig_mod.{k}": v for k, v in net.state_dict().items()}
    assert sorted(checkpoint.checked_state_dict(net, prefixed, "x.pt")) == ["bias", "weight"]
