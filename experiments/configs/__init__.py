"""Presets per dataset as JSON data: ``load_preset(dataset, preset)``."""
import json
from pathlib import Path

__all__ = ["load_preset", "load_svg_preset", "PRESETS"]

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


def load_svg_preset(dataset, preset):
    """SVG's config dict of ``preset`` for ``dataset``: {"model", "train", "eval"}."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose {' or '.join(PRESETS)}")
    configs = json.loads((_HERE / "svg.json").read_text())
    if dataset not in configs:
        raise ValueError(f"no SVG config for dataset {dataset!r}: choose one of {', '.join(configs)}")
    return configs[dataset][preset]
