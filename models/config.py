"""What every model config dataclass shares: plain-dict round trips (config.json, checkpoints) and
the checks of its sizes."""
from dataclasses import asdict

__all__ = ["DictConfig", "check_values"]


class DictConfig:
    """Mixin for a config dataclass: ``to_dict`` / ``from_dict`` as plain data."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d)


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
