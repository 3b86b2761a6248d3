"""Precision of distribution parameters under mixed-precision autocast."""
import pyro.distributions as dist
import torch

__all__ = ["full_precision", "Normal"]

_LOW = (torch.bfloat16, torch.float16)


def full_precision(x):
    """``x`` in fp32 if autocast left it in bf16/fp16, else unchanged (fp64 stays fp64).

    Distribution parameters go through this so that log-probabilities, sums over pixels and
    the ELBO are never computed in 16-bit floats (``--amp`` only speeds up the networks).
    """
    return x.float() if x.dtype in _LOW else x


def Normal(loc, scale):
    """``pyro.distributions.Normal`` with its parameters in full precision: use it for the
    latent sites of models and guides (custom guides too) that may run under ``--amp``."""
    return dist.Normal(full_precision(loc), full_precision(scale))
