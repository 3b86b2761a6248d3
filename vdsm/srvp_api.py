"""Library API for a trained SRVP run: load it and sample conditioned futures (as ``vdsm.svg_api.SVG``)."""
from guides.srvp import SRVPGuide
from models.srvp import SRVPConfig, SRVPModel, SRVPNets

from .prediction_api import PredictionModelAPI

__all__ = ["SRVP"]


class SRVP(PredictionModelAPI):
    """SRVP model and guide on one device. ``predict(x_past, n_future)`` samples futures.

    Example::

        srvp = SRVP.load("runs/smmnist-srvp")
        futures = srvp.predict(x[:, :5], n_future=20)    # [B, 25, 1, 64, 64]
    """

    config_cls, nets_cls, model_cls, guide_cls = SRVPConfig, SRVPNets, SRVPModel, SRVPGuide
    checkpoint_name = "srvp"
