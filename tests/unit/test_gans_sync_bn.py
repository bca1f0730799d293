"""--sync_bn on CPU: two ranks with half a batch each must equal one BatchNorm over the whole batch."""

import torch
import torch.distributed as td
import torch.multiprocessing as mp
import torch.nn as nn

import helpers
from gans import dcgan, sync_bn


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 4, 4, generator=g) * 3 + 1
    w = torch.randn(8, 3, 4, 4, generator=g)  # a loss that weighs every output differently
    return x, w


def _rank(rank, port, out):
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        x, w = _data()
        x = x[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
        bn = sync_bn.convert(nn.Sequential(nn.BatchNorm2d(3)), torch.device("cpu"))[0]
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
            bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
        y = bn(x)
        (y * w[rank * 4:(rank + 1) * 4]).sum().backward()
        torch.save({"y": y.detach(), "dx": x.grad, "dweight": bn.weight.grad, "dbias": bn.bias.grad,
                    "running_mean": bn.running_mean, "running_var": bn.running_var,
                    "type": type(bn).__name__}, f"{out}/{rank}.pt")
    finally:
        td.destroy_process_group()


def test_cross_rank_batchnorm_equals_full_batch_batchnorm(tmp_path):
    mp.spawn(_rank, args=(helpers.free_port(), str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    assert parts[0]["type"] == "CrossRankBatchNorm2d"
    x, w = _data()
    x.requires_grad_(True)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    y = bn(x)
    (y * w).sum().backward()
    assert torch.allclose(torch.cat([p["y"] for p in parts]), y, atol=1e-5)
    assert torch.allclose(torch.cat([p["dx"] for p in parts]), x.grad, atol=1e-5)
    # parameter gradients are per-rank partial sums (DDP then averages them)
    assert torch.allclose(parts[0]["dweight"] + parts[1]["dweight"], bn.weight.grad, atol=1e-4)
    assert torch.allclose(parts[0]["dbias"] + parts[1]["dbias"], bn.bias.grad, atol=1e-4)
    for p in parts:
        assert torch.allclose(p["running_mean"], bn.running_mean, atol=1e-6)
        assert torch.allclose(p["running_var"], bn.running_var, atol=1e-5)


def test_converted_model_keeps_the_state_dict_layout():
    G, D = dcgan.create_models("cdcgan", 16, nz=4, ngf=4, ndf=4, channels=1, num_classes=3)
    before = {k: v.clone() for k, v in D.state_dict().items()}
    sync_bn.convert(D, torch.device("cpu"))
    assert sum(isinstance(m, sync_bn.CrossRankBatchNorm2d) for m in D.modules()) == 1
    after = D.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    # one process: the converted layer is plain BatchNorm
    D.eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert D(x, torch.tensor([0, 1])).shape == (2,)
