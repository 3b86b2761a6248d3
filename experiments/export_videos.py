"""Write a benchmark's sequences as a folder of video files that ``--dataset videos`` reads:
``python -m experiments.export_videos --dataset sprites --sprites-layers DIR --out DIR``.

Each sequence of the train, val and test splits becomes ``<split>/<index>.mp4`` (H.264, yuv420p:
lossy, as a user's recordings are) or ``.gif`` (lossless up to 256 colours); ``split.csv`` keeps the
benchmark's splits, ``labels.csv`` holds the judge's heads and ``labels.json`` declares them static
or dynamic as the benchmark's judge does. Training on that folder and on the benchmark's own loader
then differs only by the video round trip (the check in BENCHMARKS.md, "Your own videos").
"""
import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import data
from data.shape_videos import write_video
from vdsm.metrics.judge import JUDGES

from .cli import UsageError, add_place_flags, cli_main

__all__ = ["export_videos"]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.export_videos",
                                usage="python -m experiments.export_videos --dataset DATASET --out FOLDER [flags] (--help lists them)",
                                description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(JUDGES), help="a benchmark with a judge")
    p.add_argument("--out", required=True, help="the new folder of videos")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4", help="mp4 (default) or gif")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate written into the files (default 8)")
    add_place_flags(p, device=False)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def export_videos(args):
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty: choose a new folder")
    folder = data.FOLDER_OPTIONS.get(args.dataset)
    options = {folder: getattr(args, folder)} if folder and getattr(args, folder) else {}
    spec = JUDGES[args.dataset]
    heads = [*spec.static, *spec.dynamic]
    rows, splits = [], []
    for split in ("train", "val", "test"):
        sequences = data.get_dataset(args.dataset, split, args.data_root, **options)
        (out / split).mkdir(parents=True, exist_ok=True)
        for i in tqdm(range(len(sequences)), desc=f"{args.dataset} {split}", disable=args.no_progress):
            x, labels = sequences[i]
            frames = (x.permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
            if frames.shape[-1] == 1:
                frames = np.repeat(frames, 3, -1)
            name = f"{split}/{i:05d}.{args.format}"
            write_video(out / name, frames, args.fps)
            rows.append([name, *(int(labels[h]) for h in heads)])
            splits.append([name, split])
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video", *heads], *rows])
    with open(out / "split.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video", "split"], *splits])
    (out / "labels.json").write_text(json.dumps({"static": list(spec.static), "dynamic": list(spec.dynamic)}))
    print(f"wrote {len(rows)} videos of {args.dataset} to {out} (split.csv keeps its splits)")


def main(argv=None):
    return cli_main(build_parser(), export_videos, sys.argv[1:] if argv is None else [str(a) for a in argv])


if __name__ == "__main__":
    sys.exit(main())
