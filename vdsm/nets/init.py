"""The weight initialisation the Sprites releases apply to a whole model (C-DSVAE's, SPYL's and DBSE's
``utils.init_weights``)."""
from torch import nn

__all__ = ["normal_init"]


def normal_init(module, std):
    """Every ``nn.Conv2d`` and ``nn.Linear`` weight N(0, ``std``) with a zero bias, every ``nn.BatchNorm2d``
    weight 1 and bias 0; transposed convolutions and recurrent layers keep PyTorch's initialisation (the
    releases test ``isinstance(m, nn.Conv2d)``, which a ``ConvTranspose2d`` is not). ``std`` 0 leaves
    the module as it is."""
    if not std:
        return module
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
