"""What guides share: the error a guide raises for input it cannot handle, and the static latent's site."""
import pyro
from pyro import poutine

from vdsm.precision import Normal

__all__ = ["GuideError", "identity_site"]


def identity_site(loc, scale, factors):
    """The static latent, site "identity" ~ Normal(loc, scale) [B, D], under its annealing factor (inside
    the batch plate)."""
    with poutine.scale(scale=factors["identity"]):
        return pyro.sample("identity", Normal(loc, scale).to_event(1))


class GuideError(ValueError):
    """A guide cannot run on this input (e.g. a non-amortised guide asked about a batch of another
    size); the message is one line that says why and what to do instead."""
