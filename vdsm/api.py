"""Deprecated: VDSM's run class is ``models.vdsm.VDSMRun`` (load any run with
``models.registry.load_run``); these names keep working for one release with a warning."""
from .deprecated import moved_names

__getattr__ = moved_names(__name__, {
    "VDSM": "models.vdsm:VDSMRun", "LatentVideoAPI": "models.spec:StaticLatentRun", "use_means": "vdsm.handlers:use_means",
    "guide_factory": "models.vdsm:guide_factory", "prior_path": "models.vdsm:prior_path",
    "FITTED_PRIORS": "models.vdsm:FITTED_PRIORS", "FITTED_FROM": "models.vdsm:FITTED_FROM"})
