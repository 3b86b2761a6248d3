"""Deprecated: SVG's run class is ``models.svg.SVGRun``; these names keep working for one release
with a warning."""
from .deprecated import moved_names

__getattr__ = moved_names(__name__, {"SVG": "models.svg:SVGRun", "ConstantFactors": "vdsm.annealing:ConstantFactors"})
