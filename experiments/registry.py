"""The prediction models the runner, evaluate and the bench know, in one table.

A model declares its config dataclass, its presets file (``experiments/configs/<file>``), the
config fields its name fixes (SVG-LP vs SVG-FP), its checkpoint name and its library API class
(``load(run_dir, device)`` in eval mode, ``predict(x_past, n_future)``, ``nets.encoder``). Adding
a prediction model is a new entry here, a model/guide pair and a presets file. VDSM, with its two
stages and judge protocols, has its own path in ``experiments.run``.

``JUDGED_MODELS`` are the one-stage models scored like VDSM by the judge protocols (DSA); their
API has VDSM's methods (``vdsm.api.LatentVideoAPI``). ``load_judged`` loads either kind.
"""
import dataclasses
import importlib
from dataclasses import dataclass, field

from models.dsa import DSAConfig
from models.srvp import SRVPConfig
from models.svg import SVGConfig

__all__ = ["OneStageModel", "PREDICTION_MODELS", "JUDGED_MODELS", "prediction_model", "api_class", "load_judged",
           "judged_seq_len"]


@dataclass(frozen=True)
class OneStageModel:
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
    "svg-lp": OneStageModel("svg-lp", SVGConfig, "svg.json", "vdsm.svg_api:SVG", "svg", {"learned_prior": True}),
    "svg-fp": OneStageModel("svg-fp", SVGConfig, "svg.json", "vdsm.svg_api:SVG", "svg", {"learned_prior": False}),
    "srvp": OneStageModel("srvp", SRVPConfig, "srvp.json", "vdsm.srvp_api:SRVP", "srvp"),
}

# Models scored by the judge protocols, trained in one stage (``experiments.run_dsa``).
JUDGED_MODELS = {
    "dsa": OneStageModel("dsa", DSAConfig, "dsa.json", "vdsm.dsa_api:DSA", "dsa"),
}


def prediction_model(name):
    return PREDICTION_MODELS[name]


def api_class(name):
    """The library API class of a prediction or judged model (imported on first use)."""
    module, cls = {**PREDICTION_MODELS, **JUDGED_MODELS}[name].api.split(":")
    return getattr(importlib.import_module(module), cls)


def load_judged(run_dir, config, device):
    """The library object of a run the judge protocols score: VDSM, or a ``JUDGED_MODELS`` model."""
    name = config.get("model_name", "vdsm")
    if name == "vdsm":
        from vdsm.api import VDSM

        return VDSM.load(run_dir, device)
    return api_class(name).load(run_dir, device)


def judged_seq_len(config):
    """Frames per sequence the run was trained and is scored on."""
    return config["stage2"]["seq_len"] if config.get("model_name", "vdsm") == "vdsm" else config["train"]["seq_len"]
