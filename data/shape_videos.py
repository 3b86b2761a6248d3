"""Generated video files of moving shapes, with their labels: the tests' and the bench's own videos.

Each video shows one shape (static factor ``shape``: square, disc or triangle; ``colour``: red,
green or blue) moving in one direction (dynamic factor ``direction``: left, right, up, down) across
a dark background, bouncing off the borders. ``write_shape_videos`` writes them as ``.mp4`` (H.264
through PyAV) or ``.gif`` with a ``labels.csv`` and a ``labels.json`` declaring the factors.
"""
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["write_shape_videos", "SHAPES", "COLOURS", "DIRECTIONS"]

#: The shapes of the generated example videos.
SHAPES = ("square", "disc", "triangle")
#: Their colours (RGB).
COLOURS = {"red": (230, 40, 40), "green": (40, 210, 60), "blue": (50, 90, 240)}
#: Their directions of motion (x, y steps).
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def shape_frames(shape, colour, direction, n_frames, size=(96, 72), speed=None, rng=None):
    """uint8 frames [n_frames, H, W, 3] of one shape moving in ``direction`` (bouncing at the borders)."""
    rng = np.random.default_rng(0) if rng is None else rng
    w, h = size
    r = max(4, min(w, h) // 6)
    speed = speed or max(1.0, min(w, h) / 24)
    pos = np.array([rng.uniform(r, w - r), rng.uniform(r, h - r)])
    vel = np.array(DIRECTIONS[direction], float) * speed
    frames = []
    for _ in range(n_frames):
        image = Image.new("RGB", (w, h), (12, 12, 16))
        draw = ImageDraw.Draw(image)
        x, y = pos
        box = (x - r, y - r, x + r, y + r)
        if shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        elif shape == "disc":
            draw.ellipse(box, fill=COLOURS[colour])
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=COLOURS[colour])
        frames.append(np.asarray(image))
        pos = pos + vel
        for k, limit in ((0, w), (1, h)):   # bounce: reflect the position and the velocity
            if pos[k] < r or pos[k] > limit - r:
                vel[k] = -vel[k]
                pos[k] = np.clip(pos[k], r, limit - r)
    return np.stack(frames)


def write_video(path, frames, fps=30):
    """Write uint8 frames [T, H, W, 3] as a video (.mp4 etc.: H.264, yuv420p, through PyAV; .gif through
    Pillow). Odd sizes are cropped by one pixel (yuv420p needs even ones)."""
    from fractions import Fraction

    import av

    path = Path(path)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=1000.0 / fps, loop=0)
        return
    frames = np.ascontiguousarray(frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_shape_videos(folder, n_videos, n_frames, *, size=(96, 72), fps=30, seed=0, extension=".mp4",
                       labels=True):
    """Write ``n_videos`` labelled shape videos into ``folder``; returns their rows (name, shape, colour, direction).

    Factors cycle so that every direction meets every shape; ``labels``: also write labels.csv/.json.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_videos):
        shape, direction = SHAPES[i % len(SHAPES)], list(DIRECTIONS)[(i // len(SHAPES)) % len(DIRECTIONS)]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        name = f"video{i:03d}{extension}"
        write_video(folder / name, shape_frames(shape, colour, direction, n_frames, size, rng=rng), fps)
        rows.append((name, shape, colour, direction))
    if labels:
        with open(folder / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([("video", "shape", "colour", "direction"), *rows])
        (folder / "labels.json").write_text(json.dumps({"static": ["shape", "colour"], "dynamic": ["direction"]}))
    return rows
