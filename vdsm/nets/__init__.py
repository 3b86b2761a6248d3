"""Plain nn.Modules (no Pyro inside): encoders, decoders, recurrent cells."""
from .batchnorm_mode import batch_statistics, batchnorm_layers
from .decoders import DCGANDecoder, MixtureOfExpertsDecoder, VGGDecoder
from .encoders import BlurPoolEncoder, DCGANEncoder, VGGEncoder
from .init import normal_init
from .recurrent import LSTM, RNN, Combiner, GatedTransition, SequenceLSTM

__all__ = ["BlurPoolEncoder", "DCGANEncoder", "VGGEncoder", "MixtureOfExpertsDecoder", "DCGANDecoder", "VGGDecoder",
           "GatedTransition", "Combiner", "SequenceLSTM", "LSTM", "RNN",
           "batch_statistics", "batchnorm_layers", "normal_init"]
