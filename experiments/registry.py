"""Deprecated: the models are the specs of ``models.registry`` (``get(name)``, ``load_run(run_dir)``);
these names keep working for one release with a DeprecationWarning."""
import warnings

from models import registry
from models.spec import JUDGE, PREDICTION

__all__ = []


def _by_evaluation(evaluation):
    return {name: spec for name, spec in registry.NAMES.items()
            if evaluation in spec.evaluations and len(spec.stages) == 1}


def _api_class(name):
    return registry.get(name).run_cls


def _load_judged(run_dir, config, device):
    return registry.load_run(run_dir, device)


def _judged_seq_len(config):
    spec = registry.spec_of_config(config)
    return spec.stages[-1].frames(spec.complete(config))


_MOVED = {
    "PREDICTION_MODELS": ("models.registry.NAMES (specs whose evaluations name 'prediction')",
                          lambda: _by_evaluation(PREDICTION)),
    "JUDGED_MODELS": ("models.registry.NAMES (specs whose evaluations name 'judge')", lambda: _by_evaluation(JUDGE)),
    "prediction_model": ("models.registry.get", lambda: registry.get),
    "api_class": ("models.registry.get(name).run_cls", lambda: _api_class),
    "load_judged": ("models.registry.load_run", lambda: _load_judged),
    "judged_seq_len": ("spec.stages[-1].frames(config)", lambda: _judged_seq_len),
}


def __getattr__(name):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where, value = _MOVED[name]
    warnings.warn(f"experiments.registry.{name} is deprecated: use {where}; the old name goes in the next release",
                  DeprecationWarning, stacklevel=2)
    return value()
