"""Deprecated: DSA's run class is ``models.dsa.DSARun``; this name keeps working for one release
with a warning."""
from .deprecated import moved_names

__getattr__ = moved_names(__name__, {"DSA": "models.dsa:DSARun"})
