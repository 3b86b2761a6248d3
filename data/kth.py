"""KTH human actions from frame folders: ``ROOT/<action>/<video>/*.png`` (SVG's conversion).

The person id is read from the video folder name (``person07_...``); persons 1-16 are
train and 17-25 test, as in SVG/SRVP. Grey 64x64 frames.
"""
import re
from pathlib import Path

from .common import DataError
from .frame_folders import FrameFolderVideos, find_videos

__all__ = ["KTH", "ACTIONS"]

ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
TRAIN_PERSONS = range(1, 17)


def KTH(split="train", root=None, *, kth=None, seq_len=20, channels=1):
    """KTH clips; labels ``action`` (6) and ``person`` (1-25). ``kth``: the frame-folder root."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    if kth is None or not Path(kth).is_dir():
        raise DataError(f"KTH folder {kth} does not exist: pass --kth DIR with <action>/<video>/*.png "
                        f"(KTH is licensed; convert it with the SVG scripts first)")
    videos, labels = [], []
    for video in find_videos(kth):
        action = next((a for a in ACTIONS if a in video.parts), None)
        person = re.search(r"person(\d+)", str(video))
        if action is None or person is None:
            raise DataError(f"cannot read action and person from {video}: expected "
                            f"<action>/personNN_.../ frame folders under --kth")
        person = int(person.group(1))
        if (person in TRAIN_PERSONS) == (split == "train"):
            videos.append(video)
            labels.append({"action": ACTIONS.index(action), "person": person})
    return FrameFolderVideos(videos, labels, seq_len=seq_len, random_start=(split == "train"),
                             channels=channels, option_hint=f" for split {split!r} under --kth {kth}")
