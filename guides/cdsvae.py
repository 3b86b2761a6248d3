"""The C-DSVAE guide: the release's q(f | x_1:T) q(z_1:T | x_1:T), one bidirectional LSTM for both."""
import pyro
import torch.nn as nn
from pyro import poutine

from guides.common import identity_site
from vdsm.handlers import register_module
from vdsm.precision import Normal

__all__ = ["CDSVAEGuide"]


class CDSVAEGuide(nn.Module):
    """Guide of :class:`models.cdsvae.CDSVAEModel`; shares its :class:`models.cdsvae.CDSVAENets`. z does
    not read f, so every location and scale comes from one pass over the frames
    (``nets.posterior``, which the model's contrastive and MI terms read too)."""

    def __init__(self, nets):
        super().__init__()
        self.nets = nets

    def forward(self, x, *, factors, **unused):
        register_module(type(self).__name__, self)  # for a plain pyro.infer.SVI too
        f_loc, f_scale, z_loc, z_scale = self.nets.posterior(x)
        with pyro.plate("sequences", x.shape[0], dim=-1):
            identity_site(f_loc, f_scale, factors)
            with poutine.scale(scale=factors["z"]):
                for k in pyro.markov(range(1, x.shape[1] + 1)):
                    pyro.sample(f"z_{k}", Normal(z_loc[:, k - 1], z_scale[:, k - 1]).to_event(1))
