"""Prediction quality against training time: train prediction models (SVG-LP/FP, SRVP) through the
runner and score their predictions on fixed **val** sequences every few training minutes.

Each evaluation conditions on the model's ``n_past`` frames of ``val_sequences`` fixed val sequences,
draws ``samples`` futures over the evaluation horizon (the preset's ``eval.n_future``: SM-MNIST
5 -> 20), and keeps the best sample per sequence and metric (PSNR and SSIM averaged over the future
frames), as the prediction protocol of ``experiments.evaluate`` does on the test split. Training
time excludes the evaluations, which run under ``vdsm.train_state.forked_rng`` in eval mode, so the run
trains exactly as it would without the monitor. The test split is never read here: it is scored
once, at the end, by ``experiments.evaluate --run DIR``.

Writes, per model, ``<out>/<model>/run`` (the run folder) and ``<out>/<model>/prediction_quality.csv``
(a row per evaluation, written as it goes); for all models together ``prediction_quality.json``
(rows, and PSNR/SSIM at each budget: the last evaluation within it) and ``prediction_quality.png``.
"""
import json
import time
from pathlib import Path

import torch

from models.spec import PREDICTION
from vdsm.metrics.prediction import baseline_scores, prediction_rows, summarize
from vdsm.train_state import forked_rng

from .cli import UsageError
from .time_to_quality import TimedMonitor

__all__ = ["PredictionMonitor", "prediction_quality"]

COLUMNS = ["train_seconds", "stage", "step", "psnr", "psnr_ci95", "ssim", "ssim_ci95", "eval_seconds"]


class PredictionMonitor(TimedMonitor):
    """Called as ``monitor(api, stage, step, last)`` after every optimiser step of a prediction run;
    evaluates when ``every_seconds`` of training time have passed and after the last step.
    ``prepare(ctx)`` (called by the runner before training, with its ``RunContext``) loads the val
    sequences."""

    columns = COLUMNS
    evaluation = PREDICTION   # the runs it scores

    def __init__(self, csv_path, every_seconds, val_sequences=64, samples=None, batch_size=32):
        super().__init__(csv_path, every_seconds)
        self.val_sequences, self.samples, self.batch_size = val_sequences, samples, batch_size
        self.x = None

    def prepare(self, ctx):
        config = ctx.config
        if config["train_split"] == "trainval":
            raise UsageError("the quality monitor scores val sequences, which --train-split trainval trains on")
        self.n_past, self.n_future = config["model"]["n_past"], config["eval"]["n_future"]
        self.samples = self.samples or config["eval"]["samples"]
        val = ctx.val_dataset(ctx.spec.stages[-1], seq_len=self.n_past + self.n_future)
        n = min(self.val_sequences, len(val))
        self.x = torch.stack([val[i][0] for i in range(n)])  # the first n: a fixed, seeded val draw
        self.baselines = {name: {k: round(float(v.mean()), 5) for k, v in scores.items()} for name, scores in
                          baseline_scores(self.x[:, :self.n_past], self.x[:, self.n_past:]).items()}
        self.start()

    @torch.no_grad()
    def evaluate(self, api, stage):
        modes = [m.training for m in api.modules()]
        api.eval()
        def samples(x_past, n_future):
            return (api.predict(x_past, n_future)[:, self.n_past:] for _ in range(self.samples))

        try:
            with forked_rng(api.device):  # training continues with its own random numbers
                batches = (x.to(api.device) for x in self.x.split(self.batch_size))
                scores = summarize(prediction_rows(batches, {"model": samples}, n_past=self.n_past))["model"]
        finally:
            for m, mode in zip(api.modules(), modes):
                m.train(mode)
        return {"psnr": round(scores["psnr"], 4), "psnr_ci95": round(scores["psnr_ci95"], 4),
                "ssim": round(scores["ssim"], 5), "ssim_ci95": round(scores["ssim_ci95"], 5)}


SLACK_SECONDS = 10.0  # an evaluation falls due when a budget is reached: just after the step that crosses it


def at_budgets(rows, budgets_seconds):
    """For each budget, the last evaluation within it (+ ``SLACK_SECONDS``; None when there is none)."""
    out = []
    for budget in budgets_seconds:
        inside = [r for r in rows if r["train_seconds"] <= budget + SLACK_SECONDS]
        out.append({"minutes": budget / 60, **({k: inside[-1][k] for k in ("step", "train_seconds", "psnr", "ssim")}
                                               if inside else {"psnr": None, "ssim": None})})
    return out


def plot(curves, path, title, baselines=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in curves.items():
        minutes = [r["train_seconds"] / 60 for r in rows]
        for ax, key in zip(axes, ("psnr", "ssim")):
            ax.errorbar(minutes, [r[key] for r in rows], yerr=[r[f"{key}_ci95"] for r in rows], marker="o",
                        capsize=2, label=name)
    for name, style in zip(baselines or {}, (":", "--", "-.")):
        for ax, key in zip(axes, ("psnr", "ssim")):
            ax.axhline(baselines[name][key], linestyle=style, color="grey", label=f"{name} (baseline)")
    for ax, label in zip(axes, ("PSNR (dB), best of N", "SSIM, best of N")):
        ax.set_xlabel("training wall-clock (minutes, evaluations excluded)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def prediction_quality(out_dir, *, models=("svg-lp", "srvp"), dataset="smmnist", every_minutes=5.0,
                       val_sequences=64, samples=None, run_flags=(), budget_minutes=30.0):
    """Train each model in ``out_dir/<model>/run`` with a :class:`PredictionMonitor`; returns the summary."""
    from experiments import run as runner

    out_dir = Path(out_dir)
    parser = runner.build_parser()
    for model in models:  # every model's flags are checked before the first run starts
        args = parser.parse_args(["--dataset", dataset, "--model", model, *run_flags])
        runner.check_flags(args, runner.given_flags(args))
        if args.resume or args.out:
            raise UsageError("--run-flags: the benchmark chooses the run folders; drop --resume/--out")
    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dataset": dataset,
               "models": list(models), "run_flags": list(run_flags), "threads": torch.get_num_threads(),
               "split": "val", "every_minutes": every_minutes, "budget_minutes": budget_minutes, "curves": {}}
    budgets = [60 * every_minutes * k for k in range(1, int(budget_minutes / every_minutes + 1e-9) + 1)] \
        if every_minutes > 0 else [60 * budget_minutes]
    for model in models:
        folder = out_dir / model
        folder.mkdir(parents=True, exist_ok=True)
        monitor = PredictionMonitor(folder / "prediction_quality.csv", 60 * every_minutes, val_sequences, samples)
        flags = ["--dataset", dataset, "--model", model, "--out", str(folder / "run"), *run_flags]
        runner.run(parser.parse_args(flags), monitor=monitor)
        summary["curves"][model] = {"flags": flags, "val_sequences": len(monitor.x), "samples": monitor.samples,
                                    "n_past": monitor.n_past, "n_future": monitor.n_future,
                                    "baselines": monitor.baselines, "rows": monitor.rows,
                                    "at_budgets": at_budgets(monitor.rows, budgets)}
        (out_dir / "prediction_quality.json").write_text(json.dumps(summary, indent=1))
    curves = {m: c["rows"] for m, c in summary["curves"].items()}
    first = next(iter(summary["curves"].values()))
    plot(curves, out_dir / "prediction_quality.png",
         f"{dataset} {first['n_past']}->{first['n_future']}: {first['val_sequences']} val sequences, best of "
         f"{first['samples']} samples ({summary['date']}, {summary['threads']} threads)", first["baselines"])
    return summary
