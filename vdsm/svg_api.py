"""Library API for a trained SVG run: load it and sample conditioned futures."""
from guides.svg import SVGGuide
from models.svg import SVGConfig, SVGModel, SVGNets

from .prediction_api import PredictionModelAPI

__all__ = ["SVG", "ConstantFactors"]


class ConstantFactors:
    """SVG and SRVP train without annealing: the KL factor is always 1 (beta is in the model). The
    learning rate is constant, then (SRVP) decays linearly to 0 over the last ``lr_decay_frac`` of
    training."""

    def __init__(self, lr_decay_frac=0.0):
        self.lr_decay_frac = lr_decay_frac

    def factors(self, progress):
        return {"z": 1.0}

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
