"""The prediction models the runner, evaluate and the bench know, in one table.

A model declares its config dataclass, its presets file (``experiments/configs/<file>``), the
config fields its name fixes (SVG-LP vs SVG-FP), its checkpoint name and its library API class
(``load(run_dir, device)`` in eval mode, ``predict(x_past, n_future)``, ``nets.encoder``). Adding
a prediction model is a new entry here, a model/guide pair and a presets file. VDSM, with its two
stages and judge protocols, has its own path in ``experiments.run``.
"""
import dataclasses
import importlib
from dataclasses import dataclass, field

from models.srvp import SRVPConfig
from models.svg import SVGConfig

__all__ = ["PredictionModel", "PREDICTION_MODELS", "prediction_model", "api_class"]


@dataclass(frozen=True)
class PredictionModel:
    name: str
    config_cls: type
    presets: str                 # file under experiments/configs/
    api: str                     # "module:Class"
    checkpoint: str              # checkpoints/<checkpoint>.pt
    fixed: dict = field(default_factory=dict)   # config fields the model's name sets

    def flags(self):
        """The config fields a command line may set (the name fixes the others)."""
        return {f.name for f in dataclasses.fields(self.config_cls)} - set(self.fixed)


PREDICTION_MODELS = {
    "svg-lp": PredictionModel("svg-lp", SVGConfig, "svg.json", "vdsm.svg_api:SVG", "svg", {"learned_prior": True}),
    "svg-fp": PredictionModel("svg-fp", SVGConfig, "svg.json", "vdsm.svg_api:SVG", "svg", {"learned_prior": False}),
    "srvp": PredictionModel("srvp", SRVPConfig, "srvp.json", "vdsm.srvp_api:SRVP", "srvp"),
}


def prediction_model(name):
    return PREDICTION_MODELS[name]


def api_class(name):
    """The library API class of a prediction model (imported on first use)."""
    module, cls = PREDICTION_MODELS[name].api.split(":")
    return getattr(importlib.import_module(module), cls)
