"""openai's `improved_diffusion.fp16_util` functions, for code that trains with them by hand.

This project's own trainer does not use them: `--use_fp16 True` (or `--precision fp16`) runs
autocast with a dynamic loss scale (trainkit.precision), whose fp32 parameters are the master
weights. These keep openai's names and signatures for code written against openai's package:
a model whose convolutions are fp16 (`model.convert_to_fp16()`, which applies
`convert_module_to_f16`) and one flat fp32 master copy of its parameters that the optimizer
steps. Parameters are taken in the order given; pass the same sequence to every call.
"""

import torch
import torch.nn as nn

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _convert(module, dtype):
    if isinstance(module, _CONVOLUTIONS):
        module.weight.data = module.weight.data.to(dtype)
        if module.bias is not None:
            module.bias.data = module.bias.data.to(dtype)


def convert_module_to_f16(l):  # noqa: E741 (openai)
    """Make a convolution's weight and bias float16 (other modules are left alone)."""
    _convert(l, torch.float16)


def convert_module_to_f32(l):  # noqa: E741 (openai)
    """Make a convolution's weight and bias float32 again (undoes convert_module_to_f16)."""
    _convert(l, torch.float32)


def _flatten(tensors):
    return torch.cat([t.detach().float().reshape(-1) for t in tensors])


def make_master_params(model_params):
    """One flat fp32 copy of the parameters, as a list holding one nn.Parameter."""
    master = nn.Parameter(_flatten(model_params))
    master.requires_grad = True
    return [master]


def model_grads_to_master_grads(model_params, master_params):
    """Set the master parameter's gradient to the model's gradients (in fp32)."""
    master_params[0].grad = _flatten(p.grad for p in model_params)


def unflatten_master_params(model_params, master_params):
    """The master values cut back into tensors shaped like `model_params` (views, in order)."""
    model_params = list(model_params)
    flat = master_params[0].detach()
    views, start = [], 0
    for p in model_params:
        views.append(flat[start:start + p.numel()].view_as(p))
        start += p.numel()
    if start != flat.numel():
        raise ValueError(f"master parameters hold {flat.numel()} values, the model parameters {start}")
    return views


def master_params_to_model_params(model_params, master_params):
    """Copy the master values into the model parameters (cast to each one's dtype)."""
    model_params = list(model_params)  # a generator would otherwise be used up by unflatten
    for p, master in zip(model_params, unflatten_master_params(model_params, master_params)):
        p.detach().copy_(master)


def zero_grad(model_params):
    for p in model_params:
        if p.grad is not None:
            p.grad.detach_()
            p.grad.zero_()
