"""Compositing of layered LPC sprite sheets into labelled 8-frame sequences.

Both Sprites variants (Li & Mandt's benchmark and the DSA/VDSM recipe) are the same
operation with different layers, frame lists and canvases, so they share this class.
Characters are composed on the fly with PIL's integer alpha compositing (the operation
the original generators used), which keeps memory small (a few MB of cropped sheets)
and is fast enough to feed training from a couple of workers.
"""
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .common import DataError, check_length, frames_to_tensor, load_rgba

__all__ = ["LayeredSprites", "CELL"]

#: Sheet cells are 64 x 64 pixels.
CELL = 64


def _strip(sheet_rgba, cells):
    """Crop the listed (row, column) cells of a sheet into one 64 x (64 * len(cells)) RGBA image."""
    n_rows, n_cols = sheet_rgba.shape[0] // CELL, sheet_rgba.shape[1] // CELL
    out = np.empty((CELL, CELL * len(cells), 4), np.uint8)
    for k, (r, c) in enumerate(cells):
        if not (0 <= r < n_rows and 0 <= c < n_cols):
            raise DataError(f"sheet of {n_rows}x{n_cols} cells has no cell ({r}, {c}): the layer files "
                            f"are not 832x1344 LPC sheets; replace them")
        out[:, k * CELL:(k + 1) * CELL] = sheet_rgba[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL]
    return Image.fromarray(out, "RGBA")


class LayeredSprites(Dataset):
    """Characters composed from layer sheets; item = (frames [T, 3, 64, 64], labels).

    :param attribute_layers: ordered dict ``label -> list of sheet paths`` (one per class),
        in drawing order; a character is one class per attribute.
    :param fixed_layers: sheet paths drawn on top of every character (e.g. shoes).
    :param sequences: list of ``(row, [columns of the frames])``; item ``i`` of a character
        is sequence ``i``.
    :param characters: integer character ids (mixed radix over attributes, first attribute
        most significant) that belong to this split.
    :param background: RGBA canvas colour.
    :param scale: pixel scale (1/256 for Li & Mandt, 1/255 for DSA).
    :param sequence_labels: function ``sequence index -> dict`` of per-sequence labels.
    :param seq_len: keep the first ``seq_len`` frames (default all).
    :param random_window: keep ``seq_len`` consecutive frames from a random start instead
        (training items with fewer frames that still cover every pose).
    :param pair_actions: VDSM stage-1 pairing: concatenate a second sequence of the same
        character with a different, random sequence index (``2 * seq_len`` frames).
    :param option_hint: appended to error messages (which option sets the layer folder).
    """

    def __init__(self, attribute_layers, fixed_layers, sequences, characters, *, background,
                 scale, sequence_labels, seq_len=None, random_window=False, pair_actions=False,
                 option_hint=""):
        self.attributes = list(attribute_layers)
        self.num_classes = [len(paths) for paths in attribute_layers.values()]
        self.num_sequences = len(sequences)
        self.frames_per_sequence = len(sequences[0][1])
        check_length(seq_len, self.frames_per_sequence, "Sprites")
        self.seq_len = seq_len or self.frames_per_sequence
        self.characters = np.asarray(characters, dtype=np.int64)
        self.background = tuple(background)
        self.scale = scale
        self.sequence_labels = sequence_labels
        self.random_window = random_window
        self.pair_actions = pair_actions
        self.seed, self.epoch = 0, 0  # per-item randomness depends only on (seed, epoch, index)
        cells = [(row, col) for row, cols in sequences for col in cols]
        self.layer_strips = {name: [_strip(load_rgba(p, option_hint), cells) for p in paths]
                             for name, paths in attribute_layers.items()}
        self.fixed_strips = [_strip(load_rgba(p, option_hint), cells) for p in fixed_layers]

    def __len__(self):
        return len(self.characters) * self.num_sequences

    def attribute_classes(self, character):
        """Class index per attribute of a character id (mixed radix decoding)."""
        classes, rest = {}, int(character)
        for name, n in zip(reversed(self.attributes), reversed(self.num_classes)):
            classes[name] = rest % n
            rest //= n
        return {name: classes[name] for name in self.attributes}

    def compose(self, character, sequence):
        """uint8 frames [8, 64, 64, 3] of one character performing one sequence."""
        width = CELL * self.frames_per_sequence
        box = (sequence * width, 0, (sequence + 1) * width, CELL)
        canvas = Image.new("RGBA", (width, CELL), self.background)
        classes = self.attribute_classes(character)
        layers = [self.layer_strips[name][classes[name]] for name in self.attributes] + self.fixed_strips
        for strip in layers:
            canvas = Image.alpha_composite(canvas, strip.crop(box))
        rgb = np.asarray(canvas)[:, :, :3]
        return rgb.reshape(CELL, self.frames_per_sequence, CELL, 3).transpose(1, 0, 2, 3)

    def window(self, frames, rng):
        """The ``seq_len`` frames kept of one composed sequence."""
        start = int(rng.integers(len(frames) - self.seq_len + 1)) if self.random_window else 0
        return frames[start:start + self.seq_len]

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        character = self.characters[index // self.num_sequences]
        sequence = index % self.num_sequences
        # Item randomness is drawn from (seed, epoch, index) so that the data order is
        # reproducible whatever the number of workers (exact resume).
        rng = np.random.default_rng([self.seed, self.epoch, index])
        frames = self.window(self.compose(character, sequence), rng)
        labels = dict(self.attribute_classes(character), **self.sequence_labels(sequence))
        labels["character"] = int(character)
        if self.pair_actions:  # a different sequence of the same character
            other = (sequence + 1 + int(rng.integers(self.num_sequences - 1))) % self.num_sequences
            frames = np.concatenate([frames, self.window(self.compose(character, other), rng)])
            labels.update({f"{k}_b": v for k, v in self.sequence_labels(other).items()})
        return frames_to_tensor(frames, self.scale), labels
