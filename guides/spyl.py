"""The SPYL guide: C-DSVAE's q(s | x_1:T) q(d_1:T | x_1:T), one bidirectional LSTM for both."""
from .cdsvae import CDSVAEGuide

__all__ = ["SPYLGuide"]


class SPYLGuide(CDSVAEGuide):
    """Guide of :class:`models.spyl.SPYLModel`; shares its :class:`models.spyl.SPYLNets` (C-DSVAE's
    networks). The "identity" site is scaled by the schedule's static KL weight, as the model's is."""
