"""Fit priors of a VDSM run after training: Gaussian mixtures of its training sequences' posterior
identities and (stage 2) dynamics with first poses, each mixture's size chosen on val.

    python -m experiments.fit_prior --run runs/sprites-... [--latents identity dynamics] [--max-components 256]

Runs trained with ``--identity-prior-components N`` / ``--dynamics-prior-components N`` (the
Sprites cpu preset) get this at the end of training; this command does the same for a run
trained without them (or refits). It writes ``checkpoints/<latent>_prior.pt``, which
``VDSM.load`` then uses to draw that latent (samples, the judge protocols' generations); the
training objective and the trained networks are untouched. Delete a file to draw from the
model's own prior again. Only train and val sequences are read (``vdsm.fitted_prior``).
"""
import argparse
import json
import sys
from pathlib import Path

import data

from vdsm.runfolder import RunLock, read_metrics

from .cli import (UsageError, add_place_flags, choose_device, cli_main, read_run_config, refuse_other_data_folders, run_data_options,
                  run_data_root, unfinished_stages)

__all__ = ["fit_prior", "fit_and_save", "main"]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.fit_prior",
                                usage="python -m experiments.fit_prior --run RUN [flags] (--help lists them)",
                                description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder of a VDSM run (experiments.run)")
    p.add_argument("--latents", nargs="+", choices=["identity", "dynamics"], default=None,
                   help="which priors to fit (default: identity, and dynamics when the run has stage 2)")
    p.add_argument("--max-components", type=int, default=256,
                   help="largest mixture tried (sizes 1, 4, 16, ... up to it; default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the k-means++ start")
    add_place_flags(p)
    return p


def fit_and_save(vdsm, run_dir, dataset, train_split, options, components, data_root=None, seed=0):
    """Fit each latent's mixture (``components``: latent -> largest size) on ``train_split``, its size
    chosen on val, and save it in the run; returns {latent: summary}."""
    train = data.get_dataset(dataset, train_split, data_root, **options)
    val = data.get_dataset(dataset, "val", data_root, **options)
    return vdsm.fit_and_save(run_dir, train, val, components, seed=seed, trained_on_val=train_split == "trainval")


def fit_prior(args):
    run_dir = Path(args.run)
    spec, config = read_run_config(run_dir)   # today's keys and dataset names
    args.data_root = run_data_root(args, config)
    if not hasattr(spec.run_cls, "fit_priors"):
        raise UsageError(f"--run {run_dir} holds a {spec.name} run: it has no priors fitted after training "
                         f"(VDSM's identity and dynamics)")
    if args.max_components < 1:
        raise UsageError(f"--max-components={args.max_components} must be at least 1")
    folder = refuse_other_data_folders(args, config["dataset"])
    device = choose_device(args.device)
    with RunLock(run_dir, "fit_prior"):   # not while a training or an evaluation writes there
        unfinished_stages(run_dir, spec, config, allowed=False, offer=False)
        return _fit_prior(args, run_dir, spec, config, folder, device)


def _fit_prior(args, run_dir, spec, config, folder, device):
    from models.registry import load_run
    from vdsm.checkpoint import write_text_atomic

    vdsm = load_run(run_dir, device)
    latents = args.latents or (["identity", "dynamics"] if vdsm.has_stage2 else ["identity"])
    if "dynamics" in latents and not vdsm.has_stage2:
        raise UsageError(f"--latents dynamics: {run_dir} has no stage-2 model (no dynamics latent); drop it")
    options = run_data_options(args, config, seq_len=spec.stages[-1].frames(config))
    summaries = fit_and_save(vdsm, run_dir, config["dataset"], config.get("train_split", "train"), options,
                             {latent: args.max_components for latent in latents}, args.data_root, args.seed)
    metrics_path = run_dir / "metrics.json"
    metrics = read_metrics(run_dir)
    for latent, summary in summaries.items():
        summary["command"] = "python -m experiments.fit_prior " + " ".join(sys.argv[1:])
        metrics[f"{latent}_prior"] = summary
        for row in summary["tried"]:
            print(f"{latent}: {row['components']:5d} components: train {row['train_loglik']:.2f}, "
                  f"val {row['val_loglik']:.2f} (mean log-likelihood per sequence)")
        print(f"{latent}: kept {summary['components']} components; written "
              f"{run_dir / 'checkpoints' / (latent + '_prior.pt')}")
    write_text_atomic(metrics_path, json.dumps(metrics, indent=1))
    return summaries


def main(argv=None):
    return cli_main(build_parser(), fit_prior, argv)


if __name__ == "__main__":
    sys.exit(main())
