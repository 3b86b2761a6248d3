"""Train (or load the cached) judge classifier of a dataset and print its accuracy per head on val and test.

    python -m experiments.judge --dataset sprites [--steps 1500] [--sprites-layers DIR]
"""
import argparse
import json
import logging
import sys

import data
from experiments.configs import load_preset
from vdsm.metrics.judge import JUDGES, load_or_train_judge

from .cli import UsageError, add_place_flags, choose_device, cli_main, flag_name


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.judge",
                                usage="python -m experiments.judge --dataset DATASET [flags] (--help lists them)",
                                description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(JUDGES)}")
    p.add_argument("--steps", type=int, default=1500, help="training steps of the judge (default 1500)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="frames per sequence (default: the dataset preset's stage-2 length, which "
                        "experiments.evaluate uses, so that it finds this judge in the cache)")
    add_place_flags(p, folders=("sprites_layers", "lpc_layers", "mug"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def judge(args):
    if args.dataset not in JUDGES:
        raise UsageError(f"no judge for dataset {args.dataset!r}: judges exist for {', '.join(JUDGES)}")
    own = data.FOLDER_OPTIONS.get(args.dataset)
    wrong = [d for d in ("sprites_layers", "lpc_layers", "mug") if d != own and getattr(args, d) is not None]
    if wrong:
        raise UsageError(f"{', '.join(map(flag_name, wrong))} do not apply to --dataset "
                         f"{args.dataset}: drop them")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # the sequence length is part of the judge's cache key: default to the one evaluations use
    options = {"seq_len": args.seq_len or load_preset(args.dataset, "cpu")["stage2"]["seq_len"]}
    if args.steps < 1:
        raise UsageError(f"--steps={args.steps} must be at least 1")
    if options["seq_len"] < 1:
        raise UsageError(f"--seq-len={args.seq_len} must be at least 1")
    if own and getattr(args, own, None):
        options[own] = getattr(args, own)
    device = choose_device(args.device)
    _, accuracy = load_or_train_judge(args.dataset, root=args.data_root, device=device, steps=args.steps,
                                      progress=not args.no_progress, accuracy_on=("val", "test"), **options)
    spec = JUDGES[args.dataset]
    print(json.dumps({"dataset": args.dataset, "trained_on": "train (val held out)", "dynamic_heads": list(spec.dynamic),
                      "static_heads": list(spec.static), "accuracy": accuracy}))


def main(argv=None):
    return cli_main(build_parser(), judge, argv)


if __name__ == "__main__":
    sys.exit(main())
