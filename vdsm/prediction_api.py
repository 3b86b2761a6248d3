"""Deprecated: the run classes' base is ``models.spec.VideoRun``; these names keep working for one
release with a warning."""
from .deprecated import moved_names

__getattr__ = moved_names(__name__, {"OneStageModelAPI": "models.spec:VideoRun", "PredictionModelAPI": "models.spec:VideoRun"})
