"""Image grids (PNG) and animated sequences (GIF)."""
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from torchvision.utils import make_grid, save_image

__all__ = ["save_grid", "save_labelled_grid", "save_gif", "save_labelled_gif", "sequence_strip"]

_PAD = 2


def save_grid(frames, path, nrow):
    """frames [N, C, H, W] in [0, 1] -> PNG grid with ``nrow`` images per row."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(frames.detach().float().cpu().clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=0.5)


def save_labelled_grid(frames, path, nrow, row_labels, title=None, column_labels=None, font_size=12):
    """``save_grid`` with a label left of each row (``row_labels`` repeats to cover every row), an
    optional label above each column and a title: the picture reads without a caption."""
    from PIL import Image, ImageDraw, ImageFont

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(frames.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=_PAD, pad_value=0.5)
    if grid.shape[0] == 1:
        grid = grid.expand(3, -1, -1)
    image = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    font = ImageFont.load_default(size=font_size)
    n_rows = -(-len(frames) // nrow)
    labels = [row_labels[r % len(row_labels)] for r in range(n_rows)]
    margin = 8 + max((font.getbbox(text)[2] for text in labels), default=0)
    top = (font_size + 6) * (bool(title) + bool(column_labels))
    canvas = Image.new("RGB", (image.width + margin, image.height + top), "white")
    canvas.paste(image, (margin, top))
    draw = ImageDraw.Draw(canvas)
    cell_h, cell_w = frames.shape[-2] + _PAD, frames.shape[-1] + _PAD
    for r, text in enumerate(labels):
        y = top + _PAD + r * cell_h + frames.shape[-2] // 2
        draw.text((margin - 4, y), text, fill="black", font=font, anchor="rm")
    if title:
        draw.text((margin, 2), title, fill="black", font=font)
    if column_labels:
        y = top - font_size - 4
        for c, text in enumerate(column_labels):
            draw.text((margin + _PAD + c * cell_w + frames.shape[-1] // 2, y), text, fill="black", font=font,
                      anchor="ma")
    canvas.save(str(path))


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


def save_labelled_gif(columns, path, labels, fps=8, font_size=11):
    """Batches [B, T, C, H, W] side by side (one column each, a row per sequence) as a GIF with
    each column's label above it."""
    from PIL import Image, ImageDraw, ImageFont

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    b, t, _, h, w = columns[0].shape
    font = ImageFont.load_default(size=font_size)
    top = font_size + 6
    frames = []
    for k in range(t):
        tiles = torch.stack([col[:, k] for col in columns], 1).flatten(0, 1)       # row by row
        grid = make_grid(tiles.detach().float().cpu().clamp(0, 1), nrow=len(columns), padding=_PAD, pad_value=0.5)
        if grid.shape[0] == 1:
            grid = grid.expand(3, -1, -1)
        image = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        canvas = Image.new("RGB", (image.width, image.height + top), "white")
        canvas.paste(image, (0, top))
        draw = ImageDraw.Draw(canvas)
        for c, text in enumerate(labels):
            draw.text((_PAD + c * (w + _PAD) + w // 2, 2), text, fill="black", font=font, anchor="ma")
        frames.append(np.asarray(canvas))
    imageio.mimsave(str(path), frames, duration=1.0 / fps, loop=0)


def sequence_strip(*batches):
    """Interleave several [B, T, C, H, W] batches row by row: rows a_0, b_0, a_1, b_1, ..."""
    rows = torch.stack(batches, 1)                # [B, K, T, C, H, W]
    return rows.flatten(0, 2)
