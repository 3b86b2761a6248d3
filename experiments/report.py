"""The end-of-run pictures and numbers of experiments.run, on val sequences, chosen by the spec's
evaluations: models the judge protocols score get reconstructions, samples, identity swaps and
action transfers (``evaluate_and_draw``); prediction models get futures and a quick best-of-N
score (``quick_prediction``). The test split is for ``experiments.evaluate``."""
import logging
import time

import torch

from guides.common import GuideError
from models.spec import JUDGE, PREDICTION
from vdsm.metrics.prediction import METRICS, baseline_predictors, prediction_rows, summarize
from vdsm.viz import save_gif, save_labelled_gif, save_labelled_grid, sequence_strip

from .cli import first_line

__all__ = ["report", "evaluate_and_draw", "draw_pictures", "quick_prediction"]

log = logging.getLogger("experiments.run")


def report(run, ctx):
    """metrics.json entries for the evaluations the spec names (``ctx``: the run's ``RunContext``)."""
    metrics = {}
    if JUDGE in run.spec.evaluations:
        metrics["evaluation"] = evaluate_and_draw(run, ctx)
    if PREDICTION in run.spec.evaluations:
        metrics["quick_prediction"] = quick_prediction(run, ctx)
    return metrics


@torch.no_grad()
def evaluate_and_draw(run, ctx):
    """Val-set reconstruction error and the run folder's pictures (val sequences, as long as the last
    stage's); ``run`` is any ``StaticLatentRun`` (VDSM, DSA, C-DSVAE)."""
    run.eval()
    config, run_dir, device = ctx.config, ctx.run_dir, ctx.device
    stage = run.spec.stages[-1]
    seq_len = stage.frames(config)
    val = ctx.val_dataset(stage)
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(1234))
    n_eval = min(ctx.eval_sequences, len(val))
    metrics = {"split": "val", "sequences": n_eval}
    if config["train_split"] == "trainval":
        metrics["note"] = "--train-split trainval: these val sequences were trained on"
    save_gif(run.generate(16, seq_len), run_dir / "samples.gif")
    try:
        bce = mse = frames = 0.0
        for chunk in order[:n_eval].split(32):
            x = torch.stack([val[int(i)][0] for i in chunk]).to(device)
            recon = run.reconstruct(x).clamp(1e-6, 1 - 1e-6)
            bce += -(x * recon.log() + (1 - x) * (1 - recon).log()).sum().item()
            mse += ((x - recon) ** 2).sum().item()
            frames += x.shape[0] * x.shape[1]
        metrics.update(recon_bce_per_frame=bce / frames, recon_mse_per_pixel=mse / (frames * x[0, 0].numel()))
        if len(val) >= 2:
            draw_pictures(run, val, order, run_dir, seq_len, device)
        else:
            metrics["skipped"] = "swaps and transfers: the val split has one sequence"
    except GuideError as err:  # e.g. a non-amortised custom guide: it cannot infer new sequences' latents
        metrics["skipped"] = f"reconstructions, swaps and transfers: {first_line(err)}"
        log.warning("warning: %s", metrics["skipped"])
    return metrics


def draw_pictures(run, dataset, order, run_dir, seq_len, device, split="val"):
    """reconstructions.png, identity_swap.png, action_transfer.png/.gif of ``dataset``'s sequences in
    ``order`` (up to 8 reconstructed, up to 6 swapped: a small split draws fewer)."""
    if len(order) < 2:
        raise ValueError(f"the {split} split has {len(order)} sequence: swaps need two")
    n, k, mid = min(8, len(order)), min(6, len(order) // 2), seq_len // 2
    x = torch.stack([dataset[int(i)][0] for i in order[:n]]).to(device)
    save_labelled_grid(sequence_strip(x, run.reconstruct(x)), run_dir / "reconstructions.png", nrow=seq_len,
                       row_labels=["real", "reconstruction"],
                       title=f"{split} sequences and their reconstructions, frames 1-{seq_len} left to right")
    # identity swap grid: top row identity sources, left column pose sources, cell = mid frame
    pose = x[:k]
    ident = torch.stack([dataset[int(i)][0] for i in order[k:2 * k]]).to(device)
    cells = [torch.zeros_like(x[0, 0])] + [ident[j, mid] for j in range(k)]
    for i in range(k):
        swapped = run.swap_identity(pose[i:i + 1].expand(k, *pose.shape[1:]), ident)
        cells += [pose[i, mid]] + [swapped[j, mid] for j in range(k)]
    save_labelled_grid(torch.stack(cells), run_dir / "identity_swap.png", nrow=k + 1,
                       row_labels=["identities"] + [f"poses of {i + 1}" for i in range(k)],
                       column_labels=["poses"] + [f"identity {j + 1}" for j in range(k)],
                       title=f"identity swap: poses of the row, identity of the column (frame {mid + 1})")
    # action transfer: rows of (action source, identity source, transfer) sequences
    transfer = run.transfer_action(pose, ident)
    save_labelled_grid(sequence_strip(pose, ident, transfer), run_dir / "action_transfer.png", nrow=seq_len,
                       row_labels=["action from", "identity from", "transfer"],
                       title="action transfer: dynamics and first pose of the first row, identity of the second")
    save_labelled_gif([pose, ident, transfer], run_dir / "action_transfer.gif",
                      ["action", "identity", "transfer"])



@torch.no_grad()
def quick_prediction(predictor, ctx, n_sequences=None, n_samples=None):
    """Best-of-N PSNR/SSIM over the training horizon on a few val sequences, and futures.gif
    (the full protocol on the test split, with the evaluation horizon: ``experiments.evaluate``)."""
    predictor.eval()
    config, run_dir = ctx.config, ctx.run_dir
    n_past, n_future = config["model"]["n_past"], config["train"]["n_future"]
    val = ctx.val_dataset(predictor.spec.stages[-1])
    n_sequences = min(n_sequences or ctx.eval_sequences, len(val), 64)
    n_samples = n_samples or min(config["eval"]["samples"], 5)
    x = torch.stack([val[i][0] for i in range(n_sequences)]).to(predictor.device)

    def model_samples(x_past, n_future):
        return (predictor.predict(x_past, n_future)[:, n_past:] for _ in range(n_samples))

    def futures_gif(name, x, best):
        rows = len(best["first_frames"])
        if name == "model":
            save_gif(torch.cat([x[:rows], torch.cat([x[:rows, :n_past], best["best_ssim_frames"]], 1),
                                torch.cat([x[:rows, :n_past], best["first_frames"]], 1)], -1), run_dir / "futures.gif")

    scores = summarize(prediction_rows([x], {"model": model_samples, **baseline_predictors()}, n_past=n_past,
                                       keep_rows=8, on_batch=futures_gif))
    out = {"split": "val", "sequences": n_sequences, "samples": n_samples, "n_past": n_past, "n_future": n_future,
           **{k: v for k, v in scores.pop("model").items() if k != "per_frame"},
           "baselines": {name: {k: s[k] for k in METRICS} for name, s in scores.items()},
           "date": time.strftime("%Y-%m-%d")}
    if config["train_split"] == "trainval":
        out["note"] = "--train-split trainval: these val sequences were trained on"
    return out
