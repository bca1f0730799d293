"""BatchNorm whose batch statistics span all ranks (`--sync_bn`).

Why: DCGAN normalises every hidden layer with batch statistics, so under DDP each rank
normalises with its own slice of the global batch unless the statistics are shared.
torch.nn.SyncBatchNorm does that but only for CUDA/XPU tensors; on CPU (gloo) it raises. On
CUDA we use it; elsewhere `CrossRankBatchNorm2d` computes the same thing with two
differentiable all-reduces (torch.distributed.nn.functional.all_reduce, whose backward
all-reduces the gradient), so autograd gives the exact gradient of the global-batch BatchNorm.

It subclasses nn.BatchNorm2d and adds no parameters or buffers: state_dicts are identical to
the plain model's, so checkpoints move freely between --sync_bn on and off.
"""

import torch
import torch.distributed as td
import torch.distributed.nn.functional as dist_fn
import torch.nn as nn


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x):
        if not (self.training and td.is_available() and td.is_initialized() and td.get_world_size() > 1):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        # Global count, then the global mean, then the global biased variance (two passes: more
        # stable than E[x^2] - E[x]^2 for activations far from zero).
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        count = dist_fn.all_reduce(count)
        mean = dist_fn.all_reduce(x.sum(dim=(0, 2, 3))) / count
        centered = x - mean[None, :, None, None]
        var = dist_fn.all_reduce(centered.pow(2).sum(dim=(0, 2, 3))) / count
        with torch.no_grad():
            m = self.momentum
            n = count.item()
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            # running_var holds the unbiased estimate, as nn.BatchNorm2d keeps it
            self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        y = centered * torch.rsqrt(var + self.eps)[None, :, None, None]
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def convert(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d of `module` with its cross-rank form (in place; returns module)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _swap(module)


def _swap(module):
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = CrossRankBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats, device=child.weight.device)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            _swap(child)
    return module
