"""Plain nn.Modules (no Pyro inside): encoders, decoders, recurrent cells."""
from .decoders import DCGANDecoder, MixtureOfExpertsDecoder, VGGDecoder
from .encoders import BlurPoolEncoder, DCGANEncoder, VGGEncoder
from .recurrent import LSTM, RNN, Combiner, GatedTransition, SequenceLSTM

__all__ = ["BlurPoolEncoder", "DCGANEncoder", "VGGEncoder", "MixtureOfExpertsDecoder", "DCGANDecoder", "VGGDecoder",
           "GatedTransition", "Combiner", "SequenceLSTM", "LSTM", "RNN"]
