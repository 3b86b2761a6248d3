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
from vdsm.checkpoint import CheckpointError
from vdsm.metrics.judge import JUDGE_HEADS, load_or_train_judge
from vdsm.metrics.protocol import judge_protocol

PUBLISHED = {  # REFERENCE.md section 6
    "sprites": {"consistency": [("VDSM (paper, own protocol)", "99.53%")]},
    "mug": {"fix_dynamics": [("DBSE (best reported)", "86.90%", "5.598", "0.041", "1.782")],
            "consistency": [("VDSM (paper, own protocol)", "93.33%")]},
}
DATA_FLAGS = {"sprites": "sprites_layers", "sprites-dsa": "lpc_layers", "mug": "mug"}


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
    return p


def _fmt(entry, percent=False):
    m, s = entry["mean"], entry["std"]
    return f"{100 * m:.2f} ± {100 * s:.2f}%" if percent else f"{m:.3f} ± {s:.3f}"


def markdown(dataset, judge_acc, result):
    lines = [f"# Disentanglement evaluation ({dataset})", "",
             f"Judge test accuracy per head: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in judge_acc.items()), "",
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
        raise CheckpointError(f"--run {run_dir}: no config.json there; pass a run folder of experiments.run")
    config = json.loads((run_dir / "config.json").read_text())
    dataset = config["dataset"]
    if dataset not in JUDGE_HEADS:
        raise ValueError(f"no judge for dataset {dataset!r}: judges exist for {', '.join(JUDGE_HEADS)}")
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        evaluate(args)
    except (ValueError, data.DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
