"""KTH human actions from frame folders: ``ROOT/<action>/<video>/*.png`` (SVG's conversion).

The person id is read from the video folder name (``person07_...``); persons 1-20 are the
training data and 21-25 the test split, as in SVG and SRVP. A seeded 5% of the training
videos (seed 42, as SRVP's validation split) are "val", the others "train"; "trainval" is
all of persons 1-20. Grey 64x64 frames.
"""
import re
from pathlib import Path

from .common import DataError, carve, check_split
from .frame_folders import FrameFolderVideos, find_videos

__all__ = ["KTH", "ACTIONS", "TRAIN_PERSONS"]

#: KTH's six actions, in label order.
ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
#: Persons 1-20 train; 21-25 are the test persons (as SVG and SRVP).
TRAIN_PERSONS = range(1, 21)
VAL_FRACTION, VAL_SEED = 0.05, 42


def KTH(split="train", root=None, *, kth=None, seq_len=20, channels=1):
    """KTH clips; labels ``action`` (6) and ``person`` (1-25). ``kth``: the frame-folder root."""
    check_split(split)
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
        if (person in TRAIN_PERSONS) == (split != "test"):
            videos.append(video)
            labels.append({"action": ACTIONS.index(action), "person": person})
    if split != "test" and videos:
        keep = set(carve(range(len(videos)), split, VAL_FRACTION, VAL_SEED).tolist())
        videos, labels = [v for k, v in enumerate(videos) if k in keep], [l for k, l in enumerate(labels) if k in keep]
    return FrameFolderVideos(videos, labels, seq_len=seq_len, random_start=(split in ("train", "trainval")),
                             channels=channels, option_hint=f" for split {split!r} under --kth {kth}")
