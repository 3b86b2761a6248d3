"""The models the library's commands know: one spec per model (``models.spec.ModelSpec``).

Adding a model to the library is one line here; a model defined outside it is named by its import
path, ``--model my_package.my_module:SPEC``, and works with every command the same way.

    get("dsa")                         # a spec, by one of its names
    get("my_package.my_module:SPEC")   # a spec defined outside the library
    load_run("runs/sprites-...")       # any run folder, in evaluation mode
"""
from vdsm.checkpoint import CheckpointError
from vdsm.runfolder import read_config_json

from .cdsvae import SPEC as CDSVAE
from .dbse import SPEC as DBSE
from .dsa import SPEC as DSA
from .spec import ModelSpec, import_object
from .spyl import SPEC as SPYL
from .srvp import SPEC as SRVP
from .svg import SPEC as SVG
from .vdsm import SPEC as VDSM

__all__ = ["MODELS", "NAMES", "get", "spec_of_config", "load_run"]

#: Every model of the library, as its spec.
MODELS = (VDSM, SVG, SRVP, DSA, CDSVAE, DBSE, SPYL)
#: Every name ``--model`` accepts (aliases included) -> its spec.
NAMES = {name: spec for spec in MODELS for name in spec.names}


def get(name):
    """The spec of ``--model name``: a registered name, or ``"package.module:SPEC"``; ValueError otherwise."""
    if name in NAMES:
        return NAMES[name]
    if ":" not in str(name):
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(NAMES)}, or give package.module:SPEC")
    spec = import_object(name, "model spec")
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"{name} is a {type(spec).__name__}, not a models.spec.ModelSpec")
    return spec


def spec_of_config(config):
    """The spec a run's config.json was trained with (its ``model_spec`` import path for a model
    defined outside the library, else its ``model_name``)."""
    name = config.get("model_spec") or config.get("model_name")
    if name is None:
        raise ValueError("config.json names no model (model_name): it was edited or damaged")
    return get(name)


def load_run(run_dir, device="cpu"):
    """The run in ``run_dir`` (any model), in evaluation mode."""
    config = read_config_json(run_dir, "run folder")   # its one-line RunFolderError as it is
    try:
        spec = spec_of_config(config)
    except ValueError as err:
        raise CheckpointError(f"{run_dir}: {err}") from None
    return spec.run_cls.load(run_dir, device)
