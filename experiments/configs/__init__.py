"""Presets per dataset as JSON data: ``load_preset(dataset, preset)``."""
import json
from pathlib import Path

__all__ = ["load_preset", "load_svg_preset", "load_judged_preset", "PRESETS"]

PRESETS = ("cpu", "paper")
_HERE = Path(__file__).parent


def load_preset(dataset, preset):
    """The config dict of ``preset`` for ``dataset``: {"data", "model", "stage1", "stage2"}."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose {' or '.join(PRESETS)}")
    path = _HERE / f"{dataset}.json"
    if not path.is_file():
        known = sorted(p.stem for p in _HERE.glob("*.json"))
        raise ValueError(f"no VDSM config for dataset {dataset!r}: choose one of {', '.join(known)}")
    return json.loads(path.read_text())[preset]


def load_svg_preset(dataset, preset, model="svg-lp"):
    """A prediction model's config dict of ``preset`` for ``dataset``: {"model", "train", "eval"}
    (the presets file is the model's, ``experiments.registry``)."""
    from experiments.registry import prediction_model

    return _model_preset(prediction_model(model).presets, dataset, preset, model)


def load_judged_preset(dataset, preset, model="dsa"):
    """A judged one-stage model's config dict of ``preset`` for ``dataset``: {"model", "train"}."""
    from experiments.registry import JUDGED_MODELS

    return _model_preset(JUDGED_MODELS[model].presets, dataset, preset, model)


def _model_preset(filename, dataset, preset, model):
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose {' or '.join(PRESETS)}")
    configs = json.loads((_HERE / filename).read_text())
    if dataset not in configs or preset not in configs[dataset]:
        known = ", ".join(f"{d} ({'/'.join(configs[d])})" for d in configs)
        raise ValueError(f"no {model} {preset} preset for dataset {dataset!r}: choose one of {known}")
    return configs[dataset][preset]
