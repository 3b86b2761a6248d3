"""BatchNorm2d followed by LeakyReLU that keeps only its output for the backward pass.

A ``Conv -> BatchNorm2d -> LeakyReLU(inplace)`` block normally keeps two full-size tensors per
layer for backward: the convolution's output (BatchNorm's input) and the activation's output (the
next layer's input). Both BatchNorm's affine map and LeakyReLU are invertible, so the normalised
input can be recovered from the output alone (in-place activated BatchNorm, Rota Bulo et al., CVPR
2018): training keeps one tensor per layer instead of two. Values, running statistics and
gradients are those of ``nn.BatchNorm2d`` + ``nn.LeakyReLU`` (tests/test_nets.py compares them in
float64); the module is a ``BatchNorm2d`` with the same parameters and buffers, so checkpoints and
initialisations are unchanged.

The recovery divides by the BatchNorm weight; a call where some weight is near zero (or any
other case the fused path does not cover: eval mode, no gradient, autocast, momentum None) runs
the two standard layers instead.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["BatchNormLeakyReLU"]

MIN_ABS_WEIGHT = 1e-3  # below this the inversion loses precision: use the standard layers


class _BatchNormLeakyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, slope):
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        F.leaky_relu_(y, slope)
        ctx.slope, ctx.eps = slope, eps
        ctx.save_for_backward(y, weight, bias, mean, invstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        y, weight, bias, mean, invstd = ctx.saved_tensors
        channel = (1, -1, 1, 1)
        grad_z = torch.ops.aten.leaky_relu_backward(grad, y, ctx.slope, True)
        # BatchNorm's input from the output: LeakyReLU with slope 1/slope inverts it, then the
        # affine map back: x = (z - bias) / (weight * invstd) + mean
        gain = 1 / (weight * invstd)
        x = F.leaky_relu(y, 1 / ctx.slope).mul_(gain.view(channel)).add_((mean - bias * gain).view(channel))
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_z, x, weight, None, None, mean, invstd, True, ctx.eps, [True, True, True])
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class BatchNormLeakyReLU(nn.BatchNorm2d):
    """``nn.BatchNorm2d(channels)`` then ``LeakyReLU(slope)``, storing one tensor for backward."""

    def __init__(self, channels, slope=0.2):
        super().__init__(channels)
        self.slope = slope

    def fused(self, x):
        return (self.training and torch.is_grad_enabled() and self.track_running_stats and self.affine
                and self.momentum is not None and not torch.is_autocast_enabled(x.device.type)
                and bool((self.weight.detach().abs() >= MIN_ABS_WEIGHT).all()))

    def forward(self, x):
        if not self.fused(x):
            return F.leaky_relu(super().forward(x), self.slope, inplace=True)
        self.num_batches_tracked.add_(1)
        return _BatchNormLeakyReLU.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                         self.momentum, self.eps, self.slope)

    def extra_repr(self):
        return f"{super().extra_repr()}, leaky_relu slope={self.slope}"
