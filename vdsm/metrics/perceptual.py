"""LPIPS (Zhang et al. 2018) as SRVP reports it: AlexNet features, the v0.1 linear weights, inputs
in [-1, 1], grey frames repeated to three channels.

The linear weights ship inside the maintained ``lpips`` package; the AlexNet backbone is
torchvision's ImageNet state dict, downloaded once into torch's hub cache (hash checked) or read
from a local file (``--lpips-backbone PATH`` in ``experiments.evaluate``) on an offline machine.
Every file is read with ``weights_only=True``.
"""
import os
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["LPIPS", "LPIPSError", "ALEXNET_URL"]

#: torchvision's AlexNet weights (the hash prefix is in the name), the backbone of LPIPS.
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"  # torchvision's; hash prefix in the name
HOW_TO_GET = (f"run once online (torchvision downloads {ALEXNET_URL} into torch's hub cache) or pass "
              "--lpips-backbone PATH (that file, a torchvision AlexNet state dict)")


class LPIPSError(Exception):
    """The LPIPS weights could not be loaded (one line: what, and how to fix it)."""


def _read_state_dict(path, what):
    path = Path(path)
    if not path.is_file():
        raise LPIPSError(f"{what} {path}: no such file; {HOW_TO_GET}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated download, not a torch file, pickled objects
        raise LPIPSError(f"{what} {path} is not a readable state dict ({type(err).__name__}); "
                         f"delete it and {HOW_TO_GET}") from None
    if not isinstance(state, dict):
        raise LPIPSError(f"{what} {path} is not a state dict; {HOW_TO_GET}")
    return state


def _alexnet_state(backbone):
    if backbone is not None:
        return _read_state_dict(backbone, "--lpips-backbone")
    try:
        return torch.hub.load_state_dict_from_url(ALEXNET_URL, map_location="cpu", progress=False,
                                                  check_hash=True, weights_only=True)
    except Exception as err:  # offline, a proxy, a corrupt cached file
        raise LPIPSError(f"LPIPS needs torchvision's AlexNet weights, which could not be loaded "
                         f"({type(err).__name__}); {HOW_TO_GET}") from None


class LPIPS(nn.Module):
    """``LPIPS(backbone=None)(pred, target)``: distances per image, frames [..., C, H, W] in [0, 1]
    (C = 1 or 3) -> [...]; lower is closer. Computed in chunks of ``chunk`` images."""

    def __init__(self, backbone=None, chunk=256):
        super().__init__()
        try:
            import lpips
        except ImportError:
            raise LPIPSError("LPIPS needs the lpips package: pip install lpips") from None
        self.chunk = chunk
        # no download here: random trunk, no linear weights; both are loaded below with weights_only
        with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=`: not the user's to fix
            warnings.simplefilter("ignore", UserWarning)
            self.net = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
        linear = _read_state_dict(Path(os.path.dirname(lpips.__file__)) / "weights" / "v0.1" / "alex.pth",
                                  "the lpips package's linear weights")
        _, unexpected = self.net.load_state_dict(linear, strict=False)  # the trunk is loaded below
        if unexpected or not {f"lin{i}.model.1.weight" for i in range(5)} <= set(linear):
            raise LPIPSError("the lpips package's linear weights do not fit its AlexNet LPIPS: reinstall lpips")
        self.load_backbone(_alexnet_state(backbone))
        self.eval().requires_grad_(False)

    def load_backbone(self, state):
        """Copy a torchvision AlexNet state dict (``features.<i>.weight``/``bias``) into the trunk."""
        for slice_ in (self.net.net.slice1, self.net.net.slice2, self.net.net.slice3, self.net.net.slice4,
                       self.net.net.slice5):
            for index, layer in slice_.named_children():
                for name, param in layer.named_parameters(recurse=False):
                    key = f"features.{index}.{name}"
                    if key not in state or state[key].shape != param.shape:
                        raise LPIPSError(f"the AlexNet weights lack {key} of shape {tuple(param.shape)}: "
                                         f"not a torchvision AlexNet state dict; {HOW_TO_GET}")
                    with torch.no_grad():
                        param.copy_(state[key])

    @torch.no_grad()
    def forward(self, pred, target):
        shape, (c, h, w) = pred.shape[:-3], pred.shape[-3:]
        device = next(self.net.parameters()).device
        a, b = pred.reshape(-1, c, h, w), target.reshape(-1, c, h, w)
        out = []
        for start in range(0, a.shape[0], self.chunk):
            x, y = (t[start:start + self.chunk].to(device).float() for t in (a, b))
            if c == 1:
                x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
            out.append(self.net(2 * x - 1, 2 * y - 1).flatten())
        return torch.cat(out).reshape(shape).to(pred.device)
