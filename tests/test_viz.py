"""Pictures that read without a caption: labels inside the image, around an unchanged grid."""
import imageio.v2 as imageio
import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from vdsm.viz import save_labelled_gif, save_labelled_grid


def test_labelled_grid_keeps_the_grid_and_adds_labels_left_and_above(tmp_path):
    frames = torch.rand(6, 3, 64, 64)
    save_labelled_grid(frames, tmp_path / "a.png", nrow=3, row_labels=["real", "reconstruction"])
    save_labelled_grid(frames, tmp_path / "b.png", nrow=3, row_labels=["real", "a much longer label"],
                       title="a title", column_labels=["x", "y", "z"])
    grid = (make_grid(frames, nrow=3, padding=2, pad_value=0.5).permute(1, 2, 0).numpy() * 255).round()
    for name in ("a.png", "b.png"):
        image = np.asarray(Image.open(tmp_path / name).convert("RGB")).astype(float)
        left, top = image.shape[1] - grid.shape[1], image.shape[0] - grid.shape[0]
        assert np.abs(image[top:, left:] - grid).max() <= 1    # the frames themselves, unchanged
        margin = image[:, :left]
        assert left > 0 and (margin < 128).any()               # text in the left margin
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png"))
    assert b.shape[1] > a.shape[1] and b.shape[0] > a.shape[0]  # the longer label, the title and column labels


def test_labelled_gif_has_one_frame_per_time_step_and_a_header(tmp_path):
    columns = [torch.rand(2, 5, 3, 64, 64) for _ in range(3)]
    save_labelled_gif(columns, tmp_path / "t.gif", ["action from", "identity from", "transfer"])
    frames = imageio.mimread(tmp_path / "t.gif")
    assert len(frames) == 5
    height, width = frames[0].shape[:2]
    assert width == 3 * 66 + 2 and height > 2 * 66 + 2          # three columns, two rows, and the header
    header = np.asarray(frames[0])[: height - (2 * 66 + 2), :, :3]
    assert (header < 128).any() and (header > 200).any()        # dark text on white
