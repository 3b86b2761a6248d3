"""Presets as small files of overrides: ``experiments/configs/<model>/<dataset>.json`` holds
``{"paper": {...}, "cpu": {...}}``, each the values of that preset that differ from the typed defaults
of the model (``ModelSpec.defaults()``: its config dataclass and each section's), with its ``source``
and its ``departs_from_paper`` list; a file ``{"same_as": "sprites", "note": "..."}`` shares another
dataset's presets (the note, if any, is added to each one's departures). ``load_model_preset`` returns the whole config: the defaults with the preset on top.

A model defined outside the library names its own folder of such files (``ModelSpec.presets``, an
absolute path)."""
import json
from pathlib import Path

from models.config import merged

__all__ = ["load_model_preset", "preset_datasets", "load_preset", "PRESETS"]

#: The presets every model has for every dataset it trains on.
PRESETS = ("cpu", "paper")
_HERE = Path(__file__).parent


def _folder(spec):
    return Path(spec.presets) if Path(spec.presets).is_absolute() else _HERE / spec.presets


def _read(spec, dataset):
    path = _folder(spec) / f"{dataset}.json"
    if not path.is_file():
        return None
    presets = json.loads(path.read_text())
    if "same_as" not in presets:
        return presets
    shared, note = _read(spec, presets["same_as"]), presets.get("note")
    return {name: {**p, "departs_from_paper": [note, *p.get("departs_from_paper", [])]} if note else p
            for name, p in shared.items()}


def preset_datasets(spec):
    """The datasets with presets of their own (not those sharing another's)."""
    return sorted(p.stem for p in _folder(spec).glob("*.json") if "same_as" not in json.loads(p.read_text()))


def load_model_preset(spec, dataset, preset, name=None):
    """The whole config of ``preset`` for ``dataset`` of the model ``spec`` (``--model name``): the
    typed defaults with the preset's overrides."""
    name = name or spec.name
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose {' or '.join(PRESETS)}")
    presets = _read(spec, dataset)
    if presets is None or preset not in presets:
        known = ", ".join(f"{d} ({'/'.join(p for p in PRESETS if p in _read(spec, d))})" for d in preset_datasets(spec))
        raise ValueError(f"no {name} {preset} preset for dataset {dataset!r}: choose one of {known}")
    return merged(spec.defaults(), presets[preset])


def load_preset(dataset, preset, model="vdsm"):
    """The whole config of ``preset`` for ``dataset`` of ``--model model`` (a registered name)."""
    from models.registry import get

    return load_model_preset(get(model), dataset, preset, model)
