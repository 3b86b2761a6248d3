"""Pyro effect utilities every model and loaded run uses: ``use_means`` (latents at their means)
and ``register_module`` (a model's networks as Pyro params, so that a plain ``pyro.infer.SVI``
trains them)."""
import pyro
from pyro.poutine.messenger import Messenger

__all__ = ["use_means", "register_module", "MODULE_SEPARATOR"]

#: Pyro's separator in the param-store names of module parameters.
MODULE_SEPARATOR = "$$$"  # Pyro's separator in the param-store names of module parameters


class use_means(Messenger):
    """Effect handler: every unobserved sample site (except those named in ``skip``) takes its mean."""

    def __init__(self, skip=()):
        super().__init__()
        self.skip = set(skip)

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None or msg["name"] in self.skip:
            return
        try:
            mean = msg["fn"].mean
        except (AttributeError, NotImplementedError):  # e.g. a plate's subsample site
            return
        msg["value"], msg["done"] = mean, True


def register_module(name, module):
    """``pyro.module(name, module)`` for the parameters that require a gradient, with the module as
    the source of truth: an entry of the same name left in the param store by another module (a
    second run loaded in this process) is replaced by this module's own tensor instead of
    overwriting the module's weights, and frozen parameters (stage 1's networks in VDSM's stage 2)
    are skipped without ``pyro.module``'s warning. Every parameter then is a param site of the
    trace, which is what ``pyro.infer.SVI`` optimises."""
    store = pyro.get_param_store()
    for param_name, value in module.named_parameters():
        if not value.requires_grad:
            continue
        known = store.param_name(value)   # a network shared by model and guide: one name, its first
        if known is not None:
            pyro.param(known)
            continue
        full = f"{name}{MODULE_SEPARATOR}{param_name}"
        if full in store:
            del store[full]
        pyro.param(full, value)
    return module
