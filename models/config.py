"""What every model config dataclass shares: plain-dict round trips (config.json, checkpoints), the
checks of its sizes, the help line of each field; and the typed sections of a training stage
(``TrainConfig`` and its kinds), whose defaults a preset overrides (``merged``)."""
from dataclasses import MISSING, asdict, dataclass, fields

__all__ = ["DictConfig", "check_values", "check_types", "field_help", "merged", "TrainConfig", "SequenceTrain",
           "PredictionTrain", "PredictionEval"]


@dataclass
class TrainConfig:
    """The settings of one training stage (a config.json section: ``train``, ``stage1`` ...)."""

    steps: int = 1000              # optimiser steps of the stage
    batch_size: int = 16           # sequences per step
    lr: float = 1e-3               # Adam's learning rate
    clip_norm: float = 0.0         # bound on the gradient norm of the loss per frame (0: no clipping)
    schedule_steps: int = None     # the length the schedules run over (None: steps; set when --resume extends a run)


@dataclass
class SequenceTrain(TrainConfig):
    """A stage trained on whole sequences without annealing (DSA, C-DSVAE, DBSE, SPYL)."""

    seq_len: int = 8               # frames per training sequence
    identity_kl: float = 1.0       # weight of the identity's KL term, in model and guide (a beta on the static latent)
    lr_decay_frac: float = 0.0     # the learning rate decays linearly to 0 over this last fraction (0: constant)


@dataclass
class PredictionTrain(TrainConfig):
    """A prediction model's stage: n_past conditioning frames (the model's) and ``n_future`` more."""

    n_future: int = 10             # frames predicted in training
    lr_decay_frac: float = 0.0     # the learning rate decays linearly to 0 over this last fraction (0: constant)


@dataclass
class PredictionEval:
    """A prediction model's end-of-run and evaluation settings (config.json's ``eval``)."""

    n_future: int = 10             # frames predicted in evaluation
    samples: int = 20              # futures sampled per sequence (best of N)


def merged(defaults, overrides):
    """``defaults`` with ``overrides`` on top, nested dicts merged key by key (a preset on the typed defaults)."""
    out = dict(defaults)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class DictConfig:
    """Mixin for a config dataclass: ``to_dict`` / ``from_dict`` as plain data."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


def field_help(config_cls, name):
    """The help line of a config field: its comment (on its line, or above it) or the string below it,
    as the class's source writes it ("" when it has none)."""
    from simple_parsing.docstring import get_attribute_docstring

    doc = get_attribute_docstring(config_cls, name)
    return " ".join((doc.comment_inline or doc.comment_above or doc.docstring_below or "").split())


def _kind_ok(value, default):
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list)) and all(_kind_ok(v, default[0]) for v in value) if default else True
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def check_types(config_cls, values, where="model"):
    """ValueError naming the first key of ``values`` (the config's ``where`` section) that ``config_cls``
    does not have, or whose value is not of its field's type (the type of the field's default: a
    hand-edited ``"z_dim": "4"``)."""
    if not isinstance(values, dict):
        raise ValueError(f"the {where} section is a {type(values).__name__}, not an object")
    known = {f.name: f for f in fields(config_cls)}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown {where} key {key!r}")
        default = known[key].default
        if default is not MISSING and default is not None and not _kind_ok(value, default):
            kind = type(default).__name__
            raise ValueError(f"{where}.{key} is {value!r}, not {'an' if kind[0] in 'aeiou' else 'a'} {kind}")


def check_values(config, *, at_least_one=(), positive=(), archs=None):
    """ValueError naming the first field out of range: counts below 1, scales at or below 0, an
    unknown ``arch``."""
    if archs is not None and config.arch not in archs:
        raise ValueError(f"arch={config.arch!r}: use {' or '.join(archs)}")
    for name in at_least_one:
        if getattr(config, name) < 1:
            raise ValueError(f"{name}={getattr(config, name)} must be at least 1")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ValueError(f"{name}={getattr(config, name)} must be positive")
