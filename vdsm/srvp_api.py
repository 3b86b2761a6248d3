"""Deprecated: SRVP's run class is ``models.srvp.SRVPRun``; this name keeps working for one release
with a warning."""
from .deprecated import moved_names

__getattr__ = moved_names(__name__, {"SRVP": "models.srvp:SRVPRun"})
