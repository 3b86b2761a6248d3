"""Your own videos: every video file and every folder of frame images below one folder.

``--dataset videos --videos DIR`` reads, below DIR, the files ``VIDEO_EXTENSIONS`` and the folders
that directly hold frame
images (``data/frame_folders.py``). Each video is a name: its path relative to DIR. Video files
are decoded by PyAV (FFmpeg's libraries, in its wheels), GIFs by Pillow.

- **Frames.** Centre-cropped to a square (``fit="crop"``) or padded with black (``fit="pad"``),
  resized to 64 x 64 (the networks' size), grey (``channels=1``) or RGB (3). ``fps`` resamples every
  video to that frame rate (nearest earlier frame); ``frame_stride`` then keeps every k-th frame.
  Videos whose frame rates differ are refused unless ``fps`` is given.
- **Decoded once.** The first use decodes each video into ``<data root>/videos/<key>.npy`` (uint8
  [T, 64, 64, C], memory-mapped) with a ``.json`` beside it (frame count, frame rate, CRC-32 of the
  frames); the key holds the file's path, size and mtime and the frame settings, so an edited video
  is decoded again. A cache file that fails its checks is decoded again, never trusted.
- **Splits by video.** A ``split.csv`` (``video,split``; split one of train / val / test) in DIR or
  at ``split_file`` names each video's split; without one a seeded permutation of the videos
  (``split_seed``) gives ``test_fraction`` of them to "test", ``val_fraction`` to "val" and the rest to
  "train" (each at least one video). "trainval" is train + val. Clips of one video are in one split.
  ``split_of`` (what ``experiments.run`` records in config.json) fixes the assignment of a run.
- **Clips.** Val and test items are the videos' consecutive, non-overlapping clips of ``seq_len``
  frames (the same clips every time); a training item is a clip from a random start in the video
  of that clip slot (longer videos are drawn more often; ``random_window``, which VDSM's stages ask
  for, is what training items do anyway). Item randomness comes from (``seed``, ``epoch``, index),
  as the benchmarks', so a resumed run sees the same items.
- **Pairs** (``pair_actions``, VDSM's stage 1: two sequences of one identity, concatenated): the
  second clip is from another video of the split with the same static labels and other dynamic
  ones (Sprites exported as videos: another action of the same character), or, without labels or
  without such a video, from a random start in the same video.
- **Labels, optional.** A ``labels.csv`` (``video`` then one column per factor) in DIR or at
  ``labels``; each factor is declared static (identity-like: what a video looks like) or dynamic
  (how it moves) by ``static_factors`` / ``dynamic_factors`` or by a ``labels.json`` beside the CSV
  (``{"static": [...], "dynamic": [...]}``). Values are class names; their natural order gives the
  class ids. Items are ``(frames [T, C, 64, 64] in [0, 1], {factor: class id})``; without labels
  the label dict is empty and ``judge_factors`` is None.
"""
import csv
import hashlib
import json
import logging
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from natsort import natsorted
from PIL import Image
from torch.utils.data import Dataset

from .common import DataError, check_split, data_root
from .frame_folders import IMAGE_EXTENSIONS, find_videos

__all__ = ["VideoFolder", "find_sources", "decode_cached", "VIDEO_EXTENSIONS", "OPTIONS", "model_fields"]

log = logging.getLogger(__name__)

#: Files read as videos (anything else in the folder is a frame image or ignored).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v", ".gif")
IMAGE_SIZE = 64
CACHE_VERSION = 1
FOLDER_HINT = " (--videos)"

#: The dataset's options beyond its folder, as the runner's flags: dest -> (type, default, help).
OPTIONS = {
    "channels": (int, 3, "1 (grey) or 3 (RGB; default)"),
    "fit": (str, "crop", "crop: centre-crop each frame to a square (default); pad: pad it with black"),
    "fps": (float, None, "resample every video to this frame rate (needed when the videos' rates differ)"),
    "frame_stride": (int, 1, "keep every k-th frame (after --fps), for fast footage (default 1)"),
    "val_fraction": (float, 0.1, "share of the videos held out as val, without a split.csv (default 0.1)"),
    "test_fraction": (float, 0.1, "share of the videos held out as test, without a split.csv (default 0.1)"),
    "split_seed": (int, 0, "seed of the split by video, without a split.csv (default 0)"),
    "split_file": (str, None, "CSV of video,split (default: DIR/split.csv when present)"),
    "labels": (str, None, "CSV of video,factor1,factor2,... (default: DIR/labels.csv when present)"),
    "static_factors": (str, None, "comma-separated label columns that describe what a video looks like"),
    "dynamic_factors": (str, None, "comma-separated label columns that describe how it moves"),
    "skip_unreadable": (bool, False, "skip video files no backend can read (listed in config.json) "
                                     "instead of refusing the folder"),
}


def model_fields(options):
    """Model config fields the data sizes: the channels."""
    return {"nc": int(options.get("channels", 3))}


# ---------------------------------------------------------------- finding and decoding


def find_sources(folder):
    """{name: path} of every video file and frame folder below ``folder``, in natural order."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
    sources = files + [p for p in find_videos(folder) if p != folder or not files]
    return {p.relative_to(folder).as_posix() or ".": p for p in natsorted(sources, key=str)}


def _frame_images(path):
    return natsorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def _stamp(path):
    """What identifies a source's content: size and mtime (of each frame image for a folder)."""
    if path.is_dir():
        images = _frame_images(path)
        return [len(images), sum(p.stat().st_size for p in images), max(p.stat().st_mtime_ns for p in images)]
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _frames_of(path):
    """(iterator of RGB uint8 frames [H, W, 3], frame rate or None) of a video file or frame folder."""
    if path.is_dir():
        def images():
            for p in _frame_images(path):
                with Image.open(p) as im:
                    yield np.asarray(im.convert("RGB"))
        return images(), None
    if path.suffix.lower() == ".gif":
        from PIL import ImageSequence

        with Image.open(path) as im:
            duration = im.info.get("duration")   # milliseconds per frame
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
        return iter(frames), (1000.0 / duration if duration else None)
    import av   # PyAV itself: imageio's PyAV plugin adds ~0.2 s per file, which thousands of short clips feel

    def decoded():
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.video[0]):
                yield frame.to_ndarray(format="rgb24")

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        rate = container.streams.video[0].average_rate
    return decoded(), (float(rate) if rate else None)


def _square(image, fit):
    w, h = image.size
    if fit == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return image.crop((left, top, left + side, top + side))
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def _decode(path, channels, fit):
    """(uint8 frames [T, 64, 64, C], frame rate or None) of one source."""
    frames, fps = _frames_of(path)
    mode = "L" if channels == 1 else "RGB"
    out = []
    for frame in frames:
        image = _square(Image.fromarray(np.asarray(frame)[..., :3]).convert(mode), fit)
        out.append(np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)))
    if not out:
        raise ValueError("no frames")
    video = np.stack(out)
    return (video[..., None] if video.ndim == 3 else video), fps


def _crc(array):
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


_VERIFIED = set()   # cache files checked in this process (path, meta mtime)


def _read_cache(npy, meta_path):
    """(memory-mapped frames, metadata) of a cache entry that passes its checks, else None."""
    try:
        meta = json.loads(meta_path.read_text())
        frames = np.load(npy, mmap_mode="r", allow_pickle=False)
        key = (str(npy), meta_path.stat().st_mtime_ns)
        if frames.dtype != np.uint8 or list(frames.shape) != meta["shape"]:
            return None
        if key not in _VERIFIED:
            if _crc(frames) != meta["crc32"]:
                return None
            _VERIFIED.add(key)
        return frames, meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_atomic(path, write):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def decode_cached(path, cache_dir, channels=3, fit="crop"):
    """(cache file of its uint8 frames [T, 64, 64, C], frame count, frame rate or None, cache key) of
    the source at ``path``, decoded into ``cache_dir`` the first time (and again when the file or the
    settings change) and checked."""
    path = Path(path).resolve()
    key = hashlib.sha256(json.dumps([CACHE_VERSION, str(path), _stamp(path), channels, fit, IMAGE_SIZE])
                         .encode()).hexdigest()[:24]
    npy, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    cached = _read_cache(npy, meta_path) if meta_path.is_file() else None
    if cached is None:
        if meta_path.is_file():
            log.warning("cache of %s is damaged (%s): decoding the video again", path, npy)
        video, fps = _decode(path, channels, fit)
        cache_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(npy, lambda f: np.save(f, video, allow_pickle=False))
        meta = {"source": str(path), "shape": list(video.shape), "fps": fps, "crc32": _crc(video)}
        _write_atomic(meta_path, lambda f: f.write(json.dumps(meta).encode()))   # written last: the entry is whole
        cached = _read_cache(npy, meta_path)
    if cached is None:
        raise OSError(f"the cache file {npy} just written does not read back: check the disk of the data root")
    # only the frame count is kept: a memory map per video would exhaust the process's map count
    # (vm.max_map_count) with tens of thousands of videos; items map their file when read
    return npy, len(cached[0]), cached[1]["fps"], key


# ---------------------------------------------------------------- splits and labels


def _read_csv(path, what, first="video"):
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the {what} {path} ({err}): fix the file or its path") from None
    rows = [[c.strip() for c in r] for r in rows if any(c.strip() for c in r)]
    if not rows or rows[0][0] != first or len(rows[0]) < 2:
        raise DataError(f"{what} {path} must start with a header row '{first},...': add it")
    bad = next((k + 1 for k, r in enumerate(rows) if len(r) != len(rows[0])), None)
    if bad:
        raise DataError(f"{what} {path}, row {bad}: {len(rows[bad - 1])} columns, the header has {len(rows[0])}")
    return rows[0], rows[1:]


def _check_names(named, found, path, what):
    unknown = [n for n in named if n not in found]
    if unknown:
        raise DataError(f"{what} {path} names {len(unknown)} videos that are not under --videos, e.g. "
                        f"{unknown[0]!r}: fix the names (paths relative to the folder) or restore the videos")
    lacking = [n for n in found if n not in named]
    if lacking:
        raise DataError(f"{what} {path} lacks {len(lacking)} of the videos, e.g. {lacking[0]!r}: add a row for each")
    dupes = sorted({n for n in named if list(named).count(n) > 1}) if len(set(named)) != len(named) else []
    if dupes:
        raise DataError(f"{what} {path} names {dupes[0]!r} twice: keep one row per video")


def _seeded_split(names, val_fraction, test_fraction, seed):
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction} must each be in (0, 1) "
                        f"with a sum below 1")
    n = len(names)
    n_test, n_val = max(1, round(test_fraction * n)), max(1, round(val_fraction * n))
    if n - n_test - n_val < 1:
        raise DataError(f"{n} videos are too few to split by video into train, val and test: add videos, "
                        f"or name each video's split in a split.csv")
    order = np.random.RandomState(seed).permutation(n)
    split_of = {names[i]: "test" for i in order[:n_test]}
    split_of.update({names[i]: "val" for i in order[n_test:n_test + n_val]})
    return {name: split_of.get(name, "train") for name in names}


def _factor_list(value):
    if value is None:
        return None
    return [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]


def _read_labels(path, names, static, dynamic, skipped=()):
    """({name: {factor: class id}}, {factor: class names}, {"static": [...], "dynamic": [...]}); rows of
    ``skipped`` videos (unreadable, --skip-unreadable) are left out."""
    header, rows = _read_csv(path, "labels file")
    rows = [r for r in rows if r[0] not in skipped]
    factors = header[1:]
    _check_names([r[0] for r in rows], names, path, "labels file")
    static, dynamic = _factor_list(static), _factor_list(dynamic)
    declared = path.with_suffix(".json")
    if static is None and dynamic is None and declared.is_file():
        try:
            spec = json.loads(declared.read_text())
            static, dynamic = list(spec.get("static", [])), list(spec.get("dynamic", []))
        except (ValueError, AttributeError, TypeError) as err:
            raise DataError(f"cannot read {declared} ({err}): write {{\"static\": [...], \"dynamic\": [...]}}") from None
    static, dynamic = static or [], dynamic or []
    unknown = [f for f in static + dynamic if f not in factors]
    if unknown:
        raise DataError(f"factor {unknown[0]!r} is not a column of {path} (its factors: {', '.join(factors)}): "
                        f"fix --static-factors / --dynamic-factors or {declared.name}")
    both = [f for f in static if f in dynamic]
    if both:
        raise DataError(f"factor {both[0]!r} is declared both static and dynamic: declare it once")
    undeclared = [f for f in factors if f not in static + dynamic]
    if undeclared:
        raise DataError(f"{path} has factors {', '.join(undeclared)} not declared static or dynamic: pass "
                        f"--static-factors / --dynamic-factors, or write {declared.name} beside it")
    classes = {f: natsorted({r[k + 1] for r in rows}) for k, f in enumerate(factors)}
    labels = {r[0]: {f: classes[f].index(r[k + 1]) for k, f in enumerate(factors)} for r in rows}
    return labels, classes, {"static": static, "dynamic": dynamic}


# ---------------------------------------------------------------- the dataset


class VideoFolder(Dataset):
    """Clips of ``seq_len`` frames of a folder's videos (see the module docstring).

    :param split: "train", "val", "test" or "trainval". :param root: the data root (the decode cache).
    :param videos: the folder.
    :param seq_len: frames per clip (default 10). The other options are ``OPTIONS``' (their defaults).
    :param split_of: {video name: split}, fixed (a run's recorded split); other videos are not used.

    Example::

        ds = VideoFolder("train", videos="clips/", seq_len=10, channels=1)
        frames, labels = ds[0]          # [10, 1, 64, 64], {} without a labels.csv
        ds.split_of                     # {"cat.mp4": "train", ...}
    """

    def __init__(self, split="train", root=None, *, videos=None, seq_len=10, channels=3, fit="crop", fps=None,
                 frame_stride=1, val_fraction=0.1, test_fraction=0.1, split_seed=0, split_file=None, labels=None,
                 static_factors=None, dynamic_factors=None, skip_unreadable=False, split_of=None,
                 pair_actions=False, random_window=False):
        check_split(split)
        folder = Path(videos).expanduser() if videos else None
        if folder is None or not folder.is_dir():
            raise DataError(f"video folder {videos} does not exist: pass --videos DIR (a folder of video files "
                            f"or frame folders)")
        if channels not in (1, 3):
            raise DataError(f"--channels {channels} must be 1 (grey) or 3 (RGB)")
        if fit not in ("crop", "pad"):
            raise DataError(f"--fit {fit!r} must be crop or pad")
        if frame_stride < 1 or (fps is not None and fps <= 0) or seq_len < 1:
            raise DataError(f"--frame-stride {frame_stride}, --fps {fps} and --seq-len {seq_len} must be positive")
        sources = find_sources(folder)
        if not sources:
            raise DataError(f"no videos under {folder}: it holds no {' '.join(VIDEO_EXTENSIONS)} files and no "
                            f"folders of frame images; check --videos")
        self.folder, self.split, self.seq_len = folder, split, seq_len
        self.random_start = random_window or split in ("train", "trainval")
        self.pair_actions, self.seed, self.epoch = pair_actions, 0, 0
        cache = data_root(root) / "videos"
        frames, counts, rates, keys, self.skipped = {}, {}, {}, [], []
        for name, path in sources.items():
            try:
                frames[name], counts[name], rates[name], key = decode_cached(path, cache, channels, fit)
                keys.append(key)
            except Exception as err:   # any failure of a third-party decoder means this file cannot be read
                if not skip_unreadable:
                    raise DataError(f"cannot read video {path} ({type(err).__name__}: {str(err)[:120]}): fix or "
                                    f"remove it, or pass --skip-unreadable to train without it") from None
                self.skipped.append(name)
        if not frames:
            raise DataError(f"none of the {len(sources)} videos under {folder} could be read (e.g. {self.skipped[0]})")
        self._check_rates(rates, fps)
        names = list(frames)
        self.split_of, self.split_how = self._assign(folder, names, split_of, split_file, val_fraction, test_fraction,
                                                     split_seed, self.skipped)
        wanted = ("train", "val") if split == "trainval" else (split,)
        self.names = [n for n in names if self.split_of.get(n) in wanted]
        self.labels, self.classes, self.declared = {n: {} for n in names}, {}, None
        labels_path = Path(labels) if labels else folder / "labels.csv"
        if labels and not labels_path.is_file():
            raise DataError(f"labels file {labels} does not exist: fix --labels")
        if labels_path.is_file():
            self.labels, self.classes, self.declared = _read_labels(labels_path, names, static_factors,
                                                                    dynamic_factors, self.skipped)
        elif static_factors or dynamic_factors:
            raise DataError(f"--static-factors / --dynamic-factors need a labels file: write {labels_path} or "
                            f"pass --labels")
        self._positions = {}
        for n in self.names:
            step = (rates[n] / fps if fps else 1.0) * frame_stride
            kept = np.floor(np.arange(0, counts[n], step)).astype(int)
            if len(kept) < seq_len:
                raise DataError(f"video {sources[n]} has {len(kept)} frames after --fps/--frame-stride, fewer than "
                                f"--seq-len {seq_len}: lower --seq-len or --frame-stride, or remove the video")
            self._positions[n] = kept
        self._cache_files = {n: frames[n] for n in self.names}   # the .npy of each video's decoded frames
        self.clips = [(n, start) for n in self.names for start in range(0, len(self._positions[n]) - seq_len + 1,
                                                                            seq_len)]
        self.fps = {n: rates[n] for n in names}
        self.partners = self._partners() if pair_actions else {}
        # what the videos hold: a judge trained on other contents (an edited file) is not reused
        self.fingerprint = hashlib.sha256(json.dumps([keys, fps, frame_stride]).encode()).hexdigest()[:16]

    @staticmethod
    def _check_rates(rates, fps):
        known = {n: r for n, r in rates.items() if r is not None}
        if fps is not None:
            unknown = [n for n, r in rates.items() if r is None]
            if unknown:
                raise DataError(f"{unknown[0]} has no frame rate (a frame folder), so --fps cannot resample it: "
                                f"drop --fps or convert it to a video file")
            return
        distinct = sorted({round(r, 2) for r in known.values()})
        if len(distinct) > 1:
            a = next(n for n, r in known.items() if round(r, 2) == distinct[0])
            b = next(n for n, r in known.items() if round(r, 2) == distinct[-1])
            raise DataError(f"the videos' frame rates differ ({a}: {distinct[0]:g} fps, {b}: {distinct[-1]:g} fps): "
                            f"pass --fps N to resample every video to N frames per second")

    @staticmethod
    def _assign(folder, names, split_of, split_file, val_fraction, test_fraction, seed, skipped):
        if split_of is not None:   # a run's recorded split: its videos must all be here
            missing = [n for n in split_of if n not in names]
            if missing:
                raise DataError(f"video {missing[0]!r} of this run's split ({split_of[missing[0]]}) is missing from "
                                f"{folder}: restore it (the run's splits are fixed in its config.json)")
            return dict(split_of), "the run's recorded split"
        path = Path(split_file) if split_file else folder / "split.csv"
        if split_file and not path.is_file():
            raise DataError(f"split file {split_file} does not exist: fix --split-file")
        if not path.is_file():
            return (_seeded_split(names, val_fraction, test_fraction, seed),
                    f"seeded: --split-seed {seed}, --val-fraction {val_fraction}, --test-fraction {test_fraction}")
        _, rows = _read_csv(path, "split file")
        rows = [r for r in rows if r[0] not in skipped]
        _check_names([r[0] for r in rows], names, path, "split file")
        bad = next((r for r in rows if r[1] not in ("train", "val", "test")), None)
        if bad:
            raise DataError(f"split file {path}: {bad[0]!r} has split {bad[1]!r}: use train, val or test")
        assigned = {r[0]: r[1] for r in rows}
        empty = [s for s in ("train", "val", "test") if s not in assigned.values()]
        if empty:
            raise DataError(f"split file {path} gives no video to {empty[0]}: give each split at least one")
        return assigned, f"as {path} names them"

    def _partners(self):
        """{video: the split's videos of the same static labels and other dynamic ones} (non-empty lists)."""
        if self.declared is None or not self.declared["static"]:
            return {}
        static, dynamic = self.declared["static"], self.declared["dynamic"]
        groups = {}
        for n in self.names:
            groups.setdefault(tuple(self.labels[n][f] for f in static), []).append(n)
        partners = {}
        for n in self.names:
            mine = [self.labels[n][f] for f in dynamic]
            others = [m for m in groups[tuple(self.labels[n][f] for f in static)]
                      if m != n and (not dynamic or [self.labels[m][f] for f in dynamic] != mine)]
            if others:
                partners[n] = others
        return partners

    @property
    def judge_factors(self):
        """{"dynamic": {factor: classes}, "static": {...}} of the labels, or None without labels."""
        if self.declared is None:
            return None
        return {kind: {f: len(self.classes[f]) for f in self.declared[kind]} for kind in ("dynamic", "static")}

    @property
    def pinned_options(self):
        """The options that fix this dataset for the rest of a run (its split by video)."""
        return {"split_of": self.split_of}

    @property
    def summary(self):
        counts = {s: sum(1 for v in self.split_of.values() if v == s) for s in ("train", "val", "test")}
        return {"videos": counts, "skipped_unreadable": self.skipped, "classes": self.classes,
                "frame_rates": sorted({r for r in self.fps.values() if r is not None}),
                "factors": self.declared}

    def describe_split(self):
        """One line: how the videos were split, how many each split got, what was skipped."""
        counts = self.summary["videos"]
        line = (f"{sum(counts.values())} videos split by video ({self.split_how}): {counts['train']} train, "
                f"{counts['val']} val, {counts['test']} test; {len(self.clips)} {self.split} clips of {self.seq_len} frames")
        return line + (f"; skipped as unreadable: {', '.join(self.skipped)}" if self.skipped else "")

    def __len__(self):
        return len(self.clips)

    def _clip(self, name, start, rng):
        positions = self._positions[name]
        if start is None:
            start = int(rng.integers(len(positions) - self.seq_len + 1))
        return np.asarray(np.load(self._cache_files[name], mmap_mode="r")[positions[start:start + self.seq_len]])

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        name, start = self.clips[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        clip = self._clip(name, None if self.random_start else start, rng)
        labels = dict(self.labels[name])
        if self.pair_actions:
            options = self.partners.get(name, [name])
            other = options[int(rng.integers(len(options)))]
            clip = np.concatenate([clip, self._clip(other, None, rng)])
            labels.update({f"{k}_b": v for k, v in self.labels[other].items()})
        return torch.from_numpy(clip).permute(0, 3, 1, 2).float().div_(255.0), labels
