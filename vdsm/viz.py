"""Image grids (PNG) and animated sequences (GIF)."""
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from torchvision.utils import make_grid, save_image

__all__ = ["save_grid", "save_gif", "sequence_strip"]


def save_grid(frames, path, nrow):
    """frames [N, C, H, W] in [0, 1] -> PNG grid with ``nrow`` images per row."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(frames.detach().float().cpu().clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=0.5)


def save_gif(sequences, path, fps=8):
    """sequences [B, T, C, H, W] -> one GIF whose frame t tiles every sequence's frame t."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    b, t = sequences.shape[:2]
    nrow = int(np.ceil(np.sqrt(b)))
    frames = []
    for k in range(t):
        grid = make_grid(sequences[:, k].detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=0.5)
        if grid.shape[0] == 1:
            grid = grid.expand(3, -1, -1)
        frames.append((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    imageio.mimsave(str(path), frames, duration=1.0 / fps, loop=0)


def sequence_strip(*batches):
    """Interleave several [B, T, C, H, W] batches row by row: rows a_0, b_0, a_1, b_1, ..."""
    rows = torch.stack(batches, 1)                # [B, K, T, C, H, W]
    return rows.flatten(0, 2)
