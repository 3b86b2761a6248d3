"""Plain nn.Modules (no Pyro inside): encoders, decoders, recurrent cells."""
from .decoders import MixtureOfExpertsDecoder
from .encoders import BlurPoolEncoder
from .recurrent import Combiner, GatedTransition

__all__ = ["BlurPoolEncoder", "MixtureOfExpertsDecoder", "GatedTransition", "Combiner"]
