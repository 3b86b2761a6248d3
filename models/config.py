"""What every model config dataclass shares: plain-dict round trips (config.json, checkpoints) and
the checks of its sizes."""
from dataclasses import MISSING, asdict, fields

__all__ = ["DictConfig", "check_values", "check_types", "field_help"]


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


def check_types(config_cls, values):
    """ValueError naming the first key of ``values`` that ``config_cls`` does not have, or whose value is
    not of its field's type (the type of the field's default: a hand-edited ``"z_dim": "4"``)."""
    if not isinstance(values, dict):
        raise ValueError(f"the model section is a {type(values).__name__}, not an object")
    known = {f.name: f for f in fields(config_cls)}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown model key {key!r}")
        default = known[key].default
        if default is not MISSING and default is not None and not _kind_ok(value, default):
            raise ValueError(f"model key {key!r} is {value!r}, not a {type(default).__name__}")


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
