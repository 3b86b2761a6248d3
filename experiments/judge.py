"""Train (or load the cached) judge classifier of a dataset and print its test accuracy per head.

    python -m experiments.judge --dataset sprites [--steps 1500] [--sprites-layers DIR]
"""
import argparse
import json
import logging
import sys

import torch

from experiments.configs import load_preset
from vdsm.metrics.judge import JUDGE_HEADS, load_or_train_judge

from .cli import UsageError, cli_main

DATA_FLAGS = {"sprites": "sprites_layers", "sprites-dsa": "lpc_layers", "mug": "mug"}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.judge", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(JUDGE_HEADS)}")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seq-len", type=int, default=None,
                   help="frames per sequence (default: the dataset preset's stage-2 length, which "
                        "experiments.evaluate uses, so that it finds this judge in the cache)")
    p.add_argument("--device", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--sprites-layers", default=None)
    p.add_argument("--lpc-layers", default=None)
    p.add_argument("--mug", default=None)
    return p


def judge(args):
    if args.dataset not in JUDGE_HEADS:
        raise UsageError(f"no judge for dataset {args.dataset!r}: judges exist for {', '.join(JUDGE_HEADS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # the sequence length is part of the judge's cache key: default to the one evaluations use
    options = {"seq_len": args.seq_len or load_preset(args.dataset, "cpu")["stage2"]["seq_len"]}
    if options["seq_len"] < 1:
        raise UsageError(f"--seq-len={args.seq_len} must be at least 1")
    flag = DATA_FLAGS.get(args.dataset)
    if flag and getattr(args, flag):
        options[flag] = getattr(args, flag)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _, accuracy = load_or_train_judge(args.dataset, root=args.data_root, device=device, steps=args.steps, **options)
    print(json.dumps({"dataset": args.dataset, "test_accuracy": accuracy}))


def main(argv=None):
    return cli_main(build_parser(), judge, argv)


if __name__ == "__main__":
    sys.exit(main())
