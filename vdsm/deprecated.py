"""Old import paths that keep working for one release (PEP 562 module ``__getattr__``): each name
is looked up in its new module when first used, with a ``DeprecationWarning`` that names it.
Importing the old module imports nothing else, so the core still never imports the models."""
import importlib
import warnings

__all__ = ["moved_names"]


def moved_names(old_module, moved):
    """A module ``__getattr__`` for ``old_module`` whose names ``moved`` (name -> "new.module:name")
    now live elsewhere."""

    def __getattr__(name):
        if name not in moved:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        new_module, _, new_name = moved[name].partition(":")
        warnings.warn(f"{old_module}.{name} moved to {new_module}.{new_name}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new_module), new_name)

    return __getattr__
