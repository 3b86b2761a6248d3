"""The SVG posterior q(z_t | x_<=t): an LSTM over the frame encodings (filtering)."""
import pyro
import torch.nn as nn
from pyro import poutine

from vdsm.handlers import register_module
from vdsm.precision import Normal

__all__ = ["SVGGuide"]


class SVGGuide(nn.Module):
    """Guide of :class:`models.svg.SVGModel`; shares its :class:`models.svg.SVGNets`."""

    def __init__(self, nets):
        super().__init__()
        self.nets = nets

    def forward(self, x, *, factors, **unused):
        register_module(type(self).__name__, self)  # for a plain pyro.infer.SVI too
        if x.shape[1] < 2:  # one frame (prediction from a single frame): no latent to infer
            return
        h, _ = self.nets.encode(x)
        (loc, scale), _ = self.nets.posterior(h[:, 1:])
        kl_scale = self.nets.config.beta * x[0, 0].numel()
        with pyro.plate("sequences", x.shape[0], dim=-1):
            with poutine.scale(scale=factors["z"] * kl_scale):
                pyro.sample("z", Normal(loc, scale).to_event(2))
