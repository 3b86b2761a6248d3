"""The DBSE guide: q(s | x_1) q(z_1:T | g_1:T - g_1), both from one encoder pass (``DBSENets.posterior``)."""
from .cdsvae import CDSVAEGuide

__all__ = ["DBSEGuide"]


class DBSEGuide(CDSVAEGuide):
    """Guide of :class:`models.dbse.DBSEModel`; shares its :class:`models.dbse.DBSENets`. The static latent
    reads the first frame's features alone, the per-frame latents the features' differences from the
    first frame's; the sites are C-DSVAE's ("identity", "z_1".."z_T"), drawn from ``nets.posterior``."""
