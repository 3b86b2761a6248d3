"""Judge-classifier evaluation of a trained run: ``python -m experiments.evaluate --run DIR``.

Trains (once, cached in the data root) or loads the dataset's judge, runs the protocols of
``vdsm.metrics.protocol`` and writes ``metrics.json`` (key "judge_protocol") and
``disentanglement.md`` (tables laid out like the papers', with published numbers beside).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

import data
from vdsm.api import VDSM
from vdsm.metrics.judge import JUDGE_HEADS, load_or_train_judge
from vdsm.metrics.protocol import judge_protocol

from .cli import UsageError, cli_main
from .judge import DATA_FLAGS

PUBLISHED = {  # REFERENCE.md section 6
    "sprites": {"consistency": [("VDSM (paper, own protocol)", "99.53%")]},
    "mug": {"fix_dynamics": [("DBSE (best reported)", "86.90%", "5.598", "0.041", "1.782")],
            "consistency": [("VDSM (paper, own protocol)", "93.33%")]},
}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder written by experiments.run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--judge-steps", type=int, default=1500, help="training steps of a new judge")
    p.add_argument("--device", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--sprites-layers", default=None)
    p.add_argument("--lpc-layers", default=None)
    p.add_argument("--mug", default=None)
    p.add_argument("--mnist", default=None)
    p.add_argument("--kth", default=None)
    p.add_argument("--bair", default=None)
    pred = p.add_argument_group("prediction runs (SVG)")
    pred.add_argument("--samples", type=int, default=None, help="futures per test sequence (paper: 100)")
    pred.add_argument("--max-sequences", type=int, default=None, help="evaluate the first N test sequences")
    pred.add_argument("--n-future", type=int, default=None, help="frames to predict (default per dataset)")
    return p


def _fmt(entry, percent=False):
    m, s = entry["mean"], entry["std"]
    return f"{100 * m:.2f} ± {100 * s:.2f}%" if percent else f"{m:.3f} ± {s:.3f}"


def markdown(dataset, judge_acc, result):
    lines = [f"# Disentanglement evaluation ({dataset})", "",
             "Judge test accuracy per head: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in judge_acc.items()), "",
             f"Batches of {result['batch_size']} test sequences, {result['repeats']} repeats (mean ± std).", "",
             "## Fixed dynamics, identity from the prior (action head)", "",
             "| Method | Acc | IS | H(y\\|x) | H(y) |", "|---|---|---|---|---|"]
    fd = result["fix_dynamics"]
    lines.append(f"| this run | {_fmt(fd['accuracy'], True)} | {_fmt(fd['IS'])} | {_fmt(fd['H(y|x)'])} | {_fmt(fd['H(y)'])} |")
    for row in PUBLISHED.get(dataset, {}).get("fix_dynamics", []):
        lines.append("| " + " | ".join(row) + " |")
    heads = list(result["fix_identity"])
    lines += ["", "## Fixed identity, dynamics from the prior (attribute heads, accuracy)", "",
              "| Method | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|",
              "| this run | " + " | ".join(_fmt(result["fix_identity"][h]["accuracy"], True) for h in heads) + " |",
              "", "| head | IS | H(y\\|x) | H(y) |", "|---|---|---|---|"]
    for h in heads:
        r = result["fix_identity"][h]
        lines.append(f"| {h} | {_fmt(r['IS'])} | {_fmt(r['H(y|x)'])} | {_fmt(r['H(y)'])} |")
    cons = result["consistency"]
    lines += ["", "## VDSM's own accuracy consistency (judge on real vs re-generated; not comparable with the above)",
              "", "| Method | " + " | ".join(cons) + " |", "|---" * (len(cons) + 1) + "|",
              "| this run | " + " | ".join(_fmt(v, True) for v in cons.values()) + " |"]
    for name, value in PUBLISHED.get(dataset, {}).get("consistency", []):
        lines.append(f"| {name} | {value} (overall) |" + " |" * (len(cons) - 1))
    at = result["action_transfer"]
    lines += ["", "## Action transfer (dynamics of A, identity of B)", "",
              "| action of A | attributes of B | both |", "|---|---|---|",
              f"| {_fmt(at['action_of_A'], True)} | {_fmt(at['attributes_of_B'], True)} | {_fmt(at['both'], True)} |", ""]
    return "\n".join(lines)


def evaluate(args):
    run_dir = Path(args.run)
    if not (run_dir / "config.json").is_file():
        raise UsageError(f"--run {run_dir}: no config.json there; pass a run folder of experiments.run")
    config = json.loads((run_dir / "config.json").read_text())
    if config.get("model_name", "vdsm").startswith("svg"):
        return evaluate_prediction(args, run_dir, config)
    dataset = config["dataset"]
    if dataset not in JUDGE_HEADS:
        raise UsageError(f"no judge for dataset {dataset!r}: judges exist for {', '.join(JUDGE_HEADS)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    options = {"seq_len": config["stage2"]["seq_len"]}
    flag = DATA_FLAGS.get(dataset)
    if flag and getattr(args, flag):
        options[flag] = getattr(args, flag)
    judge, judge_acc = load_or_train_judge(dataset, root=args.data_root, device=device, steps=args.judge_steps,
                                           **options)
    vdsm = VDSM.load(run_dir, device).eval()
    test = data.get_dataset(dataset, "test", args.data_root, **options)
    result = judge_protocol(vdsm, judge, test, batch_size=args.batch_size, repeats=args.repeats, device=device)
    result["judge_test_accuracy"] = judge_acc
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["judge_protocol"] = result
    metrics_path.write_text(json.dumps(metrics, indent=1))
    (run_dir / "disentanglement.md").write_text(markdown(dataset, judge_acc, result))
    return result


@torch.no_grad()
def evaluate_prediction(args, run_dir, config):
    """REFERENCE section 5: condition on n_past frames, N sampled futures per test sequence, best
    per metric, predicted frames only, [0, 1] range; mean and 95% interval over sequences."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vdsm.metrics.prediction import best_of_n, mean_with_interval
    from vdsm.svg_api import SVG
    from vdsm.viz import save_gif

    from .run_svg import DATA_OPTIONS

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_past = config["model"]["n_past"]
    n_future = args.n_future or config["eval"]["n_future"]
    n_samples = args.samples or config["eval"]["samples"]
    options = {"seq_len": n_past + n_future}
    flag = DATA_OPTIONS.get(config["dataset"])
    if flag and getattr(args, flag, None):
        options[flag] = getattr(args, flag)
    test = data.get_dataset(config["dataset"], "test", args.data_root, **options)
    n = min(args.max_sequences or len(test), len(test))
    svg = SVG.load(run_dir, device)
    curves = {"psnr": [], "ssim": []}
    for start in range(0, n, args.batch_size):
        x = torch.stack([test[i][0] for i in range(start, min(n, start + args.batch_size))]).to(device)
        samples = torch.stack([svg.predict(x[:, :n_past], n_future)[:, n_past:] for _ in range(n_samples)])
        best = best_of_n(samples, x[:, n_past:])
        for k in curves:
            curves[k].append(best[k].cpu())
        if start == 0:
            rows = torch.arange(min(8, len(x)))
            chosen = samples[best["best_ssim_sample"][rows], rows]
            randoms = [samples[k, rows] for k in range(min(2, n_samples))]
            save_gif(torch.cat([x[rows, n_past:], chosen, *randoms], -1), run_dir / "prediction.gif")
    summary = {"test_sequences": n, "samples": n_samples, "n_past": n_past, "n_future": n_future}
    with open(run_dir / "prediction_per_frame.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "psnr_mean", "psnr_ci95", "ssim_mean", "ssim_ci95"])
        per_frame = {}
        for k in curves:
            values = torch.cat(curves[k])                       # [N, n_future]
            per_frame[k] = mean_with_interval(values)
            mean, half = mean_with_interval(values.mean(1))
            summary[k], summary[f"{k}_ci95"] = float(mean), float(half)
        for t in range(n_future):
            writer.writerow([n_past + t + 1, *(f"{float(per_frame[k][i][t]):.5f}" for k in curves for i in (0, 1))])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    frames = range(n_past + 1, n_past + n_future + 1)
    for ax, k in zip(axes, curves):
        mean, half = per_frame[k]
        ax.plot(frames, mean.numpy(), label=config.get("model_name", "svg"))
        ax.fill_between(frames, (mean - half).numpy(), (mean + half).numpy(), alpha=0.3)
        ax.set_xlabel("frame")
        ax.set_ylabel(k.upper())
        ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "prediction_per_frame.png", dpi=120)
    plt.close(fig)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["prediction"] = summary
    metrics_path.write_text(json.dumps(metrics, indent=1))
    return summary


def main(argv=None):
    return cli_main(build_parser(), evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())