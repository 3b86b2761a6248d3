"""Library API for a trained SVG run: load it and sample conditioned futures."""
from guides.svg import SVGGuide
from models.svg import SVGConfig, SVGModel, SVGNets

from .prediction_api import PredictionModelAPI

__all__ = ["SVG", "ConstantFactors"]


class ConstantFactors:
    """SVG, SRVP and DSA train without annealing: each KL factor (``groups``; SVG and SRVP have one,
    "z") is always 1 (beta is in the model). The
    learning rate is constant, then (SRVP) decays linearly to 0 over the last ``lr_decay_frac`` of
    training."""

    def __init__(self, lr_decay_frac=0.0, groups=("z",)):
        self.lr_decay_frac, self.groups = lr_decay_frac, tuple(groups)

    def factors(self, progress):
        return {group: 1.0 for group in self.groups}

    def lr_factor(self, progress):
        if self.lr_decay_frac <= 0:
            return 1.0
        return min(1.0, max(0.0, (1.0 - progress) / self.lr_decay_frac))


class SVG(PredictionModelAPI):
    """SVG-LP/FP model and guide on one device. ``predict(x_past, n_future)`` samples futures.

    Example::

        svg = SVG.load("runs/smmnist-svg")
        futures = svg.predict(x[:, :5], n_future=20)    # [B, 25, 1, 64, 64]
    """

    config_cls, nets_cls, model_cls, guide_cls = SVGConfig, SVGNets, SVGModel, SVGGuide
    checkpoint_name = "svg"
