"""The presets' tables, one page fragment per model, written by ``conf.py`` from
``experiments/configs/<model>/*.json`` before each build, so that the docs show the presets the code
runs: each dataset's source, its overrides of the typed defaults and its departures from the paper."""
import json
from pathlib import Path


def _overrides(preset):
    """'section.key = value' for every override of a preset (source and departures apart)."""
    items = []
    for section, values in preset.items():
        if section in ("source", "departs_from_paper"):
            continue
        for key, value in (values.items() if isinstance(values, dict) else [(None, values)]):
            items.append(f"`{section}.{key} = {json.dumps(value)}`" if key else f"`{section} = {json.dumps(value)}`")
    return ", ".join(items) or "the typed defaults"


def preset_markdown(spec):
    from experiments.configs import _folder, _read, preset_datasets

    lines = []
    for dataset in sorted(p.stem for p in _folder(spec).glob("*.json")):
        raw = json.loads((_folder(spec) / f"{dataset}.json").read_text())
        lines += [f"### `--dataset {dataset}`", ""]
        if "same_as" in raw:
            lines += [f"The presets of `{raw['same_as']}`" + (f": {raw['note']}" if raw.get("note") else "."), ""]
            continue
        for name, preset in _read(spec, dataset).items():
            lines += [f"**{name}** (`--preset {name}`): overrides {_overrides(preset)}.", ""]
            if preset.get("source"):
                lines += [f"- Source: {preset['source']}"]
            lines += [f"- Departs from the paper: {d}" for d in preset.get("departs_from_paper", [])]
            lines += [""]
    assert preset_datasets(spec) is not None
    return "\n".join(lines)


def write_preset_pages(out):
    from models.registry import MODELS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in MODELS:
        (out / f"{spec.presets}.md").write_text(preset_markdown(spec))
