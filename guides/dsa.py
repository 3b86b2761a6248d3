"""The DSA guide: q(f | x_1:T) and the factorised prod_t q(z_t | x_t) or the full q(z_1:T | x_1:T, f)."""
import pyro
import torch.nn as nn
from pyro import poutine

from guides.common import identity_site
from vdsm.handlers import register_module
from vdsm.precision import Normal

__all__ = ["DSAGuide"]


class DSAGuide(nn.Module):
    """Guide of :class:`models.dsa.DSAModel`; shares its :class:`models.dsa.DSANets`. Every
    location and scale comes from networks that read the frames (and f) only, so they are
    computed for all frames at once; the sites "z_1".."z_T" are then drawn in order."""

    def __init__(self, nets):
        super().__init__()
        self.nets = nets

    def forward(self, x, *, factors, **unused):
        register_module(type(self).__name__, self)  # for a plain pyro.infer.SVI too
        h = self.nets.features(x)
        f_loc, f_scale = self.nets.static_posterior(h)
        with pyro.plate("sequences", x.shape[0], dim=-1):
            f = identity_site(f_loc, f_scale, factors)
            loc, scale = self.nets.frame_posterior(h, f)
            with poutine.scale(scale=factors["z"]):
                for k in pyro.markov(range(1, x.shape[1] + 1)):
                    pyro.sample(f"z_{k}", Normal(loc[:, k - 1], scale[:, k - 1]).to_event(1))
