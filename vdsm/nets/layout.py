"""Memory layout of convolution inputs."""
import torch

__all__ = ["conv_layout"]


def conv_layout(x):
    """``x`` in channels-last order on CPU, unchanged elsewhere.

    oneDNN's CPU convolutions ran 8-40% faster (forward + backward) on channels-last inputs on
    the project's 2-core AVX-512 machine, most for the small-batch transposed and
    full-resolution convolutions (docs/journal.md, "Seconds per SVI step (re-measured 2026-11-22 ...)"). On CUDA the layout is left as it is.
    """
    if x.device.type == "cpu" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
