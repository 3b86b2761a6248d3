"""Which statistics BatchNorm layers normalise with when a trained network is evaluated."""
from contextlib import contextmanager

from torch import nn

__all__ = ["batchnorm_layers", "batch_statistics"]


def batchnorm_layers(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def batch_statistics(module):
    """Inside, every BatchNorm layer of ``module`` normalises with the mean and variance of the input
    of each call, as in training, and leaves its running statistics untouched (the SVG release's
    generation script puts its encoder and decoder in train mode for this); outside, as before."""
    layers = batchnorm_layers(module)
    saved = [(m.training, m.track_running_stats) for m in layers]
    for m in layers:  # without tracking, a training-mode BatchNorm neither reads nor updates its buffers
        m.training, m.track_running_stats = True, False
    try:
        yield layers
    finally:
        for m, (training, tracking) in zip(layers, saved):
            m.training, m.track_running_stats = training, tracking
