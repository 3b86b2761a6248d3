"""Fit a VDSM run's identity prior to its training identities (a Gaussian mixture, size chosen on val).

    python -m experiments.fit_prior --run runs/sprites-... [--max-components 256]

Runs trained with ``--identity-prior-components N`` (the Sprites cpu preset) get this at the end
of training; this command does the same for a run trained without it (or refits). It writes
``checkpoints/identity_prior.pt``, which ``VDSM.load`` then uses to draw identities (samples,
the fixed-dynamics protocol); the training objective and the trained networks are untouched.
Delete the file to draw from the Gaussian prior again. Only train and val sequences are read.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import data

from .cli import UsageError, choose_device, cli_main

__all__ = ["fit_prior", "fit_and_save", "main"]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.fit_prior", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder of a VDSM run (experiments.run)")
    p.add_argument("--max-components", type=int, default=256,
                   help="largest mixture tried (sizes 1, 4, 16, ... up to it; default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the k-means++ start")
    p.add_argument("--device", default=None)
    p.add_argument("--data-root", default=None)
    for dest in sorted(set(data.FOLDER_OPTIONS.values())):
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, default=None)
    return p


def fit_and_save(vdsm, run_dir, dataset, train_split, options, max_components, data_root=None, seed=0):
    """Fit the mixture on ``train_split`` (val for its size), save it in the run; returns the summary."""
    started = time.time()
    train = data.get_dataset(dataset, train_split, data_root, **options)
    val = data.get_dataset(dataset, "val", data_root, **options)
    mixture, summary = vdsm.fit_identity_prior(train, val, max_components, seed=seed)
    if train_split == "trainval":
        summary["note"] = "the run trained on its val sequences (--train-split trainval): the size was chosen on them"
    summary.update(seconds=round(time.time() - started, 1), date=time.strftime("%Y-%m-%d"))
    vdsm.save_identity_prior(run_dir, mixture, summary)
    return summary


def fit_prior(args):
    from vdsm.api import VDSM
    from vdsm.checkpoint import write_text_atomic

    run_dir = Path(args.run)
    if not (run_dir / "config.json").is_file():
        raise UsageError(f"--run {run_dir}: no config.json there; pass a run folder of experiments.run")
    config = json.loads((run_dir / "config.json").read_text())
    if config.get("model_name", "vdsm") != "vdsm":
        raise UsageError(f"--run {run_dir} holds a {config['model_name']} run: only VDSM has an identity prior")
    if args.max_components < 1:
        raise UsageError(f"--max-components={args.max_components} must be at least 1")
    own = data.FOLDER_OPTIONS.get(config["dataset"])
    wrong = [d for d in set(data.FOLDER_OPTIONS.values()) if d != own and getattr(args, d) is not None]
    if wrong:
        raise UsageError(f"{', '.join('--' + d.replace('_', '-') for d in sorted(wrong))} do not apply to this "
                         f"{config['dataset']} run: drop them")
    device = choose_device(args.device)
    options = {"seq_len": config["stage2"]["seq_len"], **({own: getattr(args, own)} if own and getattr(args, own) else {})}
    vdsm = VDSM.load(run_dir, device)
    summary = fit_and_save(vdsm, run_dir, config["dataset"], config.get("train_split", "train"), options,
                           args.max_components, args.data_root, args.seed)
    summary["command"] = "python -m experiments.fit_prior " + " ".join(sys.argv[1:])
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["identity_prior"] = summary
    write_text_atomic(metrics_path, json.dumps(metrics, indent=1))
    for row in summary["tried"]:
        print(f"{row['components']:5d} components: train {row['train_loglik']:.2f}, val {row['val_loglik']:.2f} "
              f"(mean log-likelihood per identity)")
    print(f"kept {summary['components']} components ({summary['seconds']} s); written "
          f"{run_dir / 'checkpoints' / 'identity_prior.pt'}")
    return summary


def main(argv=None):
    return cli_main(build_parser(), fit_prior, argv)


if __name__ == "__main__":
    sys.exit(main())
