"""Presets per dataset as JSON data: ``load_model_preset(spec, dataset, preset)``.

A spec's ``presets`` is a file here with {dataset: {"cpu": ..., "paper": ...}} (``svg.json``; a
dataset's entry may instead name another dataset whose presets it shares), a
pattern with one file per dataset holding {"cpu": ..., "paper": ...} (VDSM's ``{dataset}.json``),
or a path to a model's own presets file (a model defined outside the library)."""
import json
from pathlib import Path

__all__ = ["load_model_preset", "preset_datasets", "load_preset", "load_svg_preset", "load_judged_preset", "PRESETS"]

PRESETS = ("cpu", "paper")
_HERE = Path(__file__).parent


def _presets_path(spec):
    return Path(spec.presets) if Path(spec.presets).is_absolute() else _HERE / spec.presets


def preset_datasets(spec):
    """The datasets a single-file presets file has its own presets for (not those naming another's)."""
    return [d for d, presets in json.loads(_presets_path(spec).read_text()).items() if isinstance(presets, dict)]


def load_model_preset(spec, dataset, preset, name=None):
    """The config dict of ``preset`` for ``dataset`` of the model ``spec`` (``--model name``)."""
    name = name or spec.name
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose {' or '.join(PRESETS)}")
    if "{dataset}" in str(spec.presets):
        path = _HERE / spec.presets.format(dataset=dataset)
        if not path.is_file():
            known = sorted(p.stem for p in _HERE.glob(spec.presets.format(dataset="*")))
            raise ValueError(f"no {name.upper()} config for dataset {dataset!r}: choose one of {', '.join(known)}")
        return json.loads(path.read_text())[preset]
    configs = json.loads(_presets_path(spec).read_text())
    if isinstance(configs.get(dataset), str):  # another dataset's presets ("smmnist-svg": "smmnist")
        dataset = configs[dataset]
    if dataset not in configs or preset not in configs[dataset]:
        known = ", ".join(f"{d} ({'/'.join(configs[d])})" for d in configs if isinstance(configs[d], dict))
        raise ValueError(f"no {name} {preset} preset for dataset {dataset!r}: choose one of {known}")
    return configs[dataset][preset]


def load_preset(dataset, preset):
    """VDSM's config dict of ``preset`` for ``dataset``: {"data", "model", "stage1", "stage2"}."""
    from models.registry import get

    return load_model_preset(get("vdsm"), dataset, preset)


def load_svg_preset(dataset, preset, model="svg-lp"):
    """A prediction model's config dict of ``preset`` for ``dataset``: {"model", "train", "eval"}."""
    from models.registry import get

    return load_model_preset(get(model), dataset, preset, model)


def load_judged_preset(dataset, preset, model="dsa"):
    """A judged one-stage model's config dict of ``preset`` for ``dataset``: {"model", "train"}."""
    return load_svg_preset(dataset, preset, model)
