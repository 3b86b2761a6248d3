"""Evaluate a trained run: ``python -m experiments.evaluate --run DIR``.

VDSM runs: the dataset's judge (trained once on the "train" split and cached in the data root)
scores the judge protocols of ``vdsm.metrics.protocol``; writes ``metrics.json`` (key
"judge_protocol") and ``disentanglement.md`` (tables laid out like the papers', published
numbers beside the rows that follow their protocol).

Prediction runs (SVG-LP, SVG-FP, SRVP): the prediction protocol (condition on n_past frames, N sampled futures per sequence,
best per metric, predicted frames only); writes ``prediction_per_frame.csv``/``.png``,
``prediction.gif`` and ``metrics.json`` (key "prediction").

The split is "test" unless ``--split val`` (for monitoring and tuning). ``--protocol paper`` is
the published protocol (prediction: 100 samples on every test sequence); ``--protocol quick``
(the default on a CPU) takes 20 samples on the first 256 sequences and finishes in minutes.
Every number is written with its protocol, split and stage, and every departure from the
published protocol is listed beside it.
"""
import argparse
import json
import resource
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

import data
from models.registry import MODELS, load_run
from models.spec import JUDGE, PREDICTION
from vdsm.checkpoint import write_text_atomic
from vdsm.runfolder import RunLock, read_metrics

from .cli import (
    UsageError,
    add_place_flags,
    choose_device,
    choose_preset,
    cli_main,
    flag_name,
    read_run_config,
    refuse_other_data_folders,
    run_data_options,
    run_data_root,
    unfinished_stages,
)

PUBLISHED = {  # docs/papers.md, "Published numbers"
    "sprites": {"consistency": [("VDSM (paper, own protocol)", "99.53%")]},
    "mug": {"fix_dynamics": [("DBSE (best reported)", "86.90%", "5.598", "0.041", "1.782")],
            "consistency": [("VDSM (paper, own protocol)", "93.33%")]},
}
PREDICTION_PROTOCOLS = {"paper": {"samples": 100, "sequences": None}, "quick": {"samples": 20, "sequences": 256}}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.evaluate",
                                usage="python -m experiments.evaluate --run RUN [flags] (--help lists them)",
                                description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder written by experiments.run")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="test (the final report; default) or val (monitoring and tuning)")
    p.add_argument("--protocol", choices=sorted(PREDICTION_PROTOCOLS),
                   help="paper (the published protocol) or quick (default without a GPU: minutes on a CPU)")
    add_place_flags(p)
    p.add_argument("--batch-size", type=int, default=None,
                   help="judge protocols: sequences per repeat (default 128, the protocol's); prediction: "
                        "sequences per forward pass (default 32; only memory and speed depend on it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--unfinished", action="store_true",
                   help="score a run whose training has not finished (its newest checkpoint; refused without it); "
                        "metrics.json records each stage's step beside the numbers")
    judge = p.add_argument_group("judge protocols (VDSM runs)")
    judge.add_argument("--repeats", type=int, default=None, help="batches drawn (default 5)")
    judge.add_argument("--judge-steps", type=int, default=None, help="training steps of a new judge (default 1500)")
    pred = p.add_argument_group("prediction protocol (SVG and SRVP runs)")
    pred.add_argument("--samples", type=int, default=None, help="futures per sequence (overrides the protocol's)")
    pred.add_argument("--max-sequences", type=int, default=None,
                      help="evaluate the first N sequences (overrides the protocol's)")
    pred.add_argument("--n-future", type=int, default=None, help="frames to predict (default per dataset)")
    pred.add_argument("--lpips-backbone", default=None, metavar="PATH",
                      help="torchvision AlexNet state dict for LPIPS (default: torchvision's download, cached)")
    pred.add_argument("--batchnorm", choices=("running", "batch"), default=None,
                      help="statistics the BatchNorm layers use in prediction: running (default; the run in eval "
                           "mode, as SRVP's test.py) or batch (each call's own batch, as SVG's generation scripts)")
    pred.add_argument("--fvd-model", default=None, metavar="PATH",
                      help="TorchScript I3D: adds FVD (first sample per video, conditioning frames prepended)")
    return p


def evaluate(args):
    run_dir = Path(args.run)
    spec, config = read_run_config(run_dir)
    args.data_root = run_data_root(args, config)
    for name in ("batch_size", "repeats", "judge_steps", "samples", "max_sequences", "n_future"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"{flag_name(name)}={value} must be at least 1")
    refuse_other_data_folders(args, config["dataset"])
    device = choose_device(args.device)
    with RunLock(run_dir, "evaluate"):   # not while a training or another evaluation writes there
        args.unfinished = unfinished_stages(run_dir, spec, config, args.unfinished)
        if JUDGE not in spec.evaluations:
            return evaluate_prediction(args, run_dir, config, device, spec)
        return _evaluate_judged(args, run_dir, config, device, spec)


def _evaluate_judged(args, run_dir, config, device, spec):
    for name in ("samples", "max_sequences", "n_future", "protocol", "lpips_backbone", "fvd_model", "batchnorm"):
        if getattr(args, name) is not None:
            predicting = ", ".join(s.name for s in MODELS if PREDICTION in s.evaluations)
            raise UsageError(f"{flag_name(name)} applies to prediction runs ({predicting}), not to this "
                             f"{spec.name.upper()} run")
    args.repeats, args.judge_steps, args.batch_size = args.repeats or 5, args.judge_steps or 1500, args.batch_size or 128
    return evaluate_judge(args, run_dir, config, device, spec)


def _data_options(args, config, seq_len):
    return run_data_options(args, config, seq_len=seq_len)


def _update_metrics(run_dir, key, value, unfinished=None):
    """``metrics.json[key] = value``, the other entries kept; ``unfinished``: the stages scored before
    their training finished (``--unfinished``), recorded beside the numbers."""
    metrics = read_metrics(run_dir)
    metrics[key] = {**value, "unfinished_training": unfinished} if unfinished else value
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1))


# ---------------------------------------------------------------- judge protocols (VDSM)


def evaluate_judge(args, run_dir, config, device, spec):
    from vdsm.metrics.judge import judge_spec, load_or_train_judge
    from vdsm.metrics.protocol import judge_protocol

    dataset = config["dataset"]
    options = _data_options(args, config, spec.stages[-1].frames(config))
    if judge_spec(dataset, args.data_root, **options) is None:
        return evaluate_unlabelled(args, run_dir, config, device, options)
    run = load_run(run_dir, device)
    sequences = data.get_dataset(dataset, args.split, args.data_root, **options)
    name, what = config["model_name"], run.describe()
    print(f"judge protocols on {args.split} sequences of {dataset}: {args.repeats} repeats x "
          f"{min(args.batch_size, len(sequences))} sequences, {what}", flush=True)
    judge, judge_acc = load_or_train_judge(dataset, root=args.data_root, device=device, steps=args.judge_steps,
                                           progress=not args.no_progress, accuracy_on=(args.split,), **options)
    result = judge_protocol(run, judge, sequences, batch_size=args.batch_size, repeats=args.repeats,
                            device=device, progress=not args.no_progress)
    result.update(model=name, model_kind=what, split=args.split, judge_accuracy=judge_acc[args.split], date=time.strftime("%Y-%m-%d"),
                  command="python -m experiments.evaluate " + " ".join(sys.argv[1:]))
    if config.get("train_split") == "trainval" and args.split == "val":
        result["note"] = "this run trained on its val sequences (--train-split trainval)"
    _update_metrics(run_dir, "judge_protocol" if args.split == "test" else "judge_protocol_val", result, args.unfinished)
    name = "disentanglement.md" if args.split == "test" else "disentanglement_val.md"
    write_text_atomic(run_dir / name, markdown(dataset, result))
    return result


UNLABELLED_SKIPPED = {"judge_protocols": "the videos have no labels: a judge needs a labels.csv (video, then one "
                                         "column per factor) with its factors declared static or dynamic"}


@torch.no_grad()
def evaluate_unlabelled(args, run_dir, config, device, options, n_max=256):
    """What needs no labels, for a run the judge protocols would score: the reconstruction error, the
    Frechet distance between prior samples and real sequences in the run's own frame features, and
    reconstructions, identity swaps and action transfers as labelled pictures (``<split>_pictures/``);
    metrics.json says which protocols were skipped and why."""
    from experiments.report import draw_pictures
    from vdsm.metrics.frechet import frechet_distance

    run = load_run(run_dir, device)
    run.eval()
    sequences = data.get_dataset(config["dataset"], args.split, args.data_root, **options)
    n = min(n_max, len(sequences))
    order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(1234))
    x = torch.stack([sequences[int(i)][0] for i in order[:n]]).to(device)
    seq_len = x.shape[1]
    recon = torch.cat([run.reconstruct(chunk) for chunk in x.split(32)])
    generated = torch.cat([run.generate(min(32, n - k), seq_len) for k in range(0, n, 32)])
    out = run_dir / f"{args.split}_pictures"
    out.mkdir(exist_ok=True)
    draw_pictures(run, sequences, order, out, seq_len, device, args.split)
    skipped = dict(UNLABELLED_SKIPPED)
    if PREDICTION not in run.spec.evaluations:
        skipped["prediction"] = f"{run.spec.name} does not predict frames from a past (its evaluations: judge)"
    result = {"split": args.split, "sequences": n, "frames": seq_len, "model": config["model_name"],
              "recon_mse_per_pixel": float(((x - recon) ** 2).mean()),
              "frechet_prior_samples": {"value": frechet_distance(generated, x, run.frame_features, device),
                                        "what": f"{n} prior samples against {n} real {args.split} sequences, every "
                                                f"frame, in the run's own frame-encoder features"},
              "pictures": str(out.relative_to(run_dir)), "skipped": skipped,
              "date": time.strftime("%Y-%m-%d"), "command": "python -m experiments.evaluate " + " ".join(sys.argv[1:])}
    _update_metrics(run_dir, "unlabelled" if args.split == "test" else "unlabelled_val", result, args.unfinished)
    print(f"{args.split}: reconstruction MSE per pixel {result['recon_mse_per_pixel']:.5f}, Frechet distance of prior "
          f"samples {result['frechet_prior_samples']['value']:.3f} (run's frame features); pictures in {out}; "
          f"skipped: {'; '.join(f'{k} ({v})' for k, v in skipped.items())}", flush=True)
    return result


def _fmt(entry, percent=False):
    m, s = entry["mean"], entry["std"]
    return f"{100 * m:.2f} ± {100 * s:.2f}%" if percent else f"{m:.3f} ± {s:.3f}"


def _judge_table(title, section, published):
    """Markdown lines of one protocol: its heads' accuracy and entropies, or why it was skipped;
    ``published`` rows only beside a protocol the numbers follow."""
    lines = [f"## {title}", ""]
    if "skipped" in section:
        return lines + [f"Skipped: {section['skipped']}.", ""]
    lines += [f"What: {section['what']}.", "", "| head | Acc | IS | H(y\\|x) | H(y) |", "|---|---|---|---|---|"]
    for head, r in section["heads"].items():
        lines.append(f"| this run: {head}, per batch | {_fmt(r['accuracy'], True)} | {_fmt(r['IS'])} | "
                     f"{_fmt(r['H(y|x)'])} | {_fmt(r['H(y)'])} |")
        for key, label in (("pooled", "pooled"), ("class_balanced", "pooled, class-balanced")):
            p = section[key][head]
            lines.append(f"| this run: {head}, {label} ({p['sequences']}) | {100 * p['accuracy']:.2f}% | "
                         f"{p['IS']:.3f} | {p['H(y|x)']:.3f} | {p['H(y)']:.3f} |")
    if section["protocol"]:
        lines += ["| " + " | ".join(row) + " |" for row in published]
    lines.append("")
    lines += ["Per batch: mean ± std over the repeats' batches (H(y) of a batch is biased low); pooled: "
              "every repeat's predictions at once; class-balanced: for each true class its first m, m the "
              "smallest class count, as the C-DSVAE and DBSE test scripts report.", ""]
    for key, what in (("prior_identity", "identities drawn from the prior"),
                      ("prior_dynamics", "dynamics drawn from the prior")):
        if key in section:
            lines += [f"Diversity and confidence of the {what} (the other heads; no label to be right about; "
                      f"uniform over k classes: H(y) = ln k):", "",
                      "| head | IS | H(y\\|x) | H(y) |", "|---|---|---|---|"]
            lines += [f"| {head} | {_fmt(r['IS'])} | {_fmt(r['H(y|x)'])} | {_fmt(r['H(y)'])} |"
                      for head, r in section[key].items()]
            lines.append("")
    if "all_static" in section:
        lines += [f"Every static head right at once: {_fmt(section['all_static'], True)}.", ""]
    if "frechet_judge" in section:
        lines += [f"Frechet distance to the real batch's frames (judge frame features, per batch): "
                  f"{_fmt(section['frechet_judge'])}.", ""]
    return lines


def markdown(dataset, result):
    kind = result["model_kind"]
    lines = [f"# Disentanglement evaluation ({dataset}, {result['split']} split, {kind})", "",
             "Judge accuracy per head on real " + result["split"] + " sequences: "
             + ", ".join(f"{k} {100 * v:.2f}%" for k, v in result["judge_accuracy"].items()), "",
             f"Batches of {result['batch_size']} {result['split']} sequences, {result['repeats']} repeats "
             f"(mean ± std).", ""]
    if result.get("departure"):
        lines += [f"**Departure from the published protocol: {result['departure']}.**", ""]
    if result["stage"] == 1:
        lines += ["**A stage-1 model has no dynamics latent: the first two tables are not the protocol "
                  "(see each table's note).**", ""]
    published = PUBLISHED.get(dataset, {}).get("fix_dynamics", []) if result["split"] == "test" else []
    lines += _judge_table("Fixed dynamics, identity from the prior (dynamic heads)", result["fix_dynamics"], published)
    lines += _judge_table("Fixed identity, dynamics from the prior (static heads)", result["fix_identity"], [])
    cons = result["consistency"]
    heads = list(cons["heads"])
    lines += ["## Accuracy consistency (VDSM's own metric; not comparable with the tables above)",
              "",
              f"What: {cons['what']}; guide inputs: {cons['guide_inputs']}.", "",
              "| | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|",
              "| this run | " + " | ".join(_fmt(v, True) for v in cons["heads"].values()) + " |"]
    if "consistency_with_pose_input" in result:
        extra = result["consistency_with_pose_input"]["heads"]
        lines.append("| this run, guide sees the frame poses | " + " | ".join(_fmt(v, True) for v in extra.values()) + " |")
    if result["split"] == "test":
        for name, value in PUBLISHED.get(dataset, {}).get("consistency", []):
            lines.append(f"| {name} | {value} (overall) |" + " |" * (len(heads) - 1))
    if "reconstruction" in result:
        rec = result["reconstruction"]
        keys = [k for k in rec if k != "what"]
        lines += ["", f"## Reconstructions: {rec['what']}", "", "| " + " | ".join(keys) + " |",
                  "|---" * len(keys) + "|", "| " + " | ".join(_fmt(rec[k], True) for k in keys) + " |"]
    tr = result["transfer"]
    keys = [k for k in ("dynamics_of_A", "identity_of_B", "both") if k in tr]
    lines += ["", f"## Transfer ({tr['what']})", "", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|",
              "| " + " | ".join(_fmt(tr[k], True) for k in keys) + " |", ""]
    lines += _per_class_table(result.get("per_class", {}))
    return "\n".join(lines)


def _per_class_table(per_class):
    """Markdown: each dynamic head's accuracy per true class (a class never drawn shows as ~0%)."""
    lines = []
    for head in next(iter(per_class.values()), {}):
        classes = len(per_class["reconstruction"][head]["of"])
        lines += [f"## Per class: {head} (true class -> % right, of all repeats' sequences)", "",
                  "| | " + " | ".join(str(c) for c in range(classes)) + " |", "|---" * (classes + 1) + "|"]
        for name, label in (("fix_dynamics", "dynamics kept, identity from the prior"),
                            ("reconstruction", "reconstructions (reference guide inputs)"), ("transfer", "transfer")):
            counts = per_class[name][head]
            cells = [f"{100 * r / n:.0f}" if n else "-" for r, n in zip(counts["right"], counts["of"])]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        parts = per_class["fix_dynamics"][head].get("parts")
        if parts:   # a combined head: which of its factors a model keeps
            names = list(parts)
            lines += [f"{head}'s factors (% right on each factor alone):", "",
                      "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
            for name, label in (("fix_dynamics", "dynamics kept, identity from the prior"),
                                ("reconstruction", "reconstructions"), ("transfer", "transfer")):
                shares = per_class[name][head]["parts"]
                lines.append(f"| {label} | " + " | ".join(f"{100 * shares[n]:.1f}" for n in names) + " |")
            lines.append("")
    return lines


# ---------------------------------------------------------------- prediction (SVG, SRVP)


def prediction_plan(args, config, n_available, device, data_departure=None):
    """The protocol's settings, what was overridden, and the departures from the published one
    (``data_departure``: the dataset's own, e.g. a test set that is not the published one)."""
    name, reason = choose_preset(args.protocol, device, what="protocol", small="quick")
    settings = dict(PREDICTION_PROTOCOLS[name])
    samples = args.samples or settings["samples"]
    sequences = min(args.max_sequences or settings["sequences"] or n_available, n_available)
    n_future = args.n_future or config["eval"]["n_future"]
    paper = PREDICTION_PROTOCOLS["paper"]
    departures = [data_departure] if data_departure else []
    if samples != paper["samples"]:
        departures.append(f"{samples} samples per sequence (published protocol: {paper['samples']})")
    if sequences != n_available:
        departures.append(f"the first {sequences} of the {n_available} {args.split} sequences (published: all)")
    if n_future != config["eval"]["n_future"]:
        departures.append(f"{n_future} predicted frames (published: {config['eval']['n_future']})")
    if args.split != "test":
        departures.append(f"the {args.split} split (published: test)")
    if args.samples or args.max_sequences:
        name = f"{name}, overridden"
    return {"name": name, "reason": reason, "samples": samples, "sequences": sequences, "of": n_available,
            "n_future": n_future, "departures": departures}


def batchnorm_mode(mode, run):
    """``--batchnorm``: the context the prediction loop runs in, and what metrics.json says about it."""
    from vdsm.nets import batch_statistics, batchnorm_layers

    layers = sum(len(batchnorm_layers(m)) for m in run.modules())
    if mode == "batch" and not layers:
        raise UsageError(f"--batchnorm batch: this {run.spec.name} run has no BatchNorm layer; drop the flag")
    if mode != "batch":
        return {"context": nullcontext,
                "what": "running statistics (the run in eval mode, as SRVP's test.py); SVG's generation scripts "
                        "use each call's batch statistics (--batchnorm batch)" if layers
                        else "none: the run has no BatchNorm layer"}

    @contextmanager
    def every_module_on_batch_statistics():
        with ExitStack() as stack:
            for module in run.modules():
                stack.enter_context(batch_statistics(module))
            yield

    return {"context": every_module_on_batch_statistics,
            "what": f"batch statistics (--batchnorm batch, as SVG's generate_svg_lp.py: encoder.train(), "
                    f"decoder.train()): each of the run's {layers} BatchNorm layers normalises with the statistics "
                    f"of its own call; here a call holds --batch-size sequences (the encoder and decoder take whole "
                    f"time steps, about 64 frames per call), in the release one time step of its batch of 100"}


@torch.no_grad()
def evaluate_prediction(args, run_dir, config, device, spec):
    """docs/papers.md, "Evaluation protocols": condition on n_past frames, N sampled futures per sequence, best per
    metric, predicted frames only, [0, 1] range; mean and 95% interval over sequences; the trivial
    baselines scored as predictors on the same sequences (``vdsm.metrics.prediction.prediction_rows``)."""
    from vdsm.metrics.prediction import BASELINES, METRICS, baseline_predictors, prediction_rows, summarize
    from vdsm.viz import save_gif

    if args.repeats is not None or args.judge_steps is not None:
        raise UsageError("--repeats and --judge-steps apply to judge protocols (VDSM runs), not to this prediction run")
    args.batch_size = args.batch_size or 32
    n_past = config["model"]["n_past"]
    n_future = args.n_future or config["eval"]["n_future"]
    sequences = data.get_dataset(config["dataset"], args.split, args.data_root,
                                 **_data_options(args, config, n_past + n_future))
    plan = prediction_plan(args, config, len(sequences), device, getattr(sequences, "departs_from_published", None))
    n, n_samples = plan["sequences"], plan["samples"]
    lpips, lpips_skipped = perceptual_metric(args, device)
    fvd = video_metric(args, device, n, (n_past + n_future, config["model"]["nc"]))
    print(f"prediction protocol {plan['name']} ({plan['reason']}): {n} {args.split} sequences x {n_samples} samples "
          f"x {n_future} predicted frames after {n_past}"
          + (f"; departs from the published protocol: {'; '.join(plan['departures'])}" if plan["departures"] else ""),
          flush=True)
    predictor = load_run(run_dir, device)
    batchnorm = batchnorm_mode(args.batchnorm, predictor)
    metrics = {**METRICS, **({"lpips": lpips} if lpips is not None else {})}
    batches = range(0, n, args.batch_size)
    bar = tqdm(total=len(batches) * n_samples, desc="prediction (samples)", disable=args.no_progress,
               dynamic_ncols=True)
    fvd_features = {"real": [], "fake": []}

    def model_samples(x_past, n_future):
        with batchnorm["context"]():
            for k in range(n_samples):
                sample = predictor.predict(x_past, n_future)[:, n_past:]
                if k == 0 and fvd is not None:   # SRVP's FVD: the first sample, conditioning frames prepended
                    fvd_features["fake"].append(fvd.features(torch.cat([x_past, sample], 1)))
                yield sample
                bar.update(1)

    def on_batch(name, x, best):
        if name != "model":
            return
        if fvd is not None:
            fvd_features["real"].append(fvd.features(x))
        if best["best_ssim_frames"].shape[0]:   # the first batch
            save_gif(torch.cat([x[:len(best["first_frames"]), n_past:], best["best_ssim_frames"], best["first_frames"]],
                               -1), run_dir / "prediction.gif")

    started = time.time()
    rows = prediction_rows((torch.stack([sequences[i][0] for i in range(start, min(n, start + args.batch_size))]).to(device)
                            for start in batches), {"model": model_samples, **baseline_predictors()}, metrics,
                           n_past=n_past, keep_rows=8, on_batch=on_batch)
    bar.close()
    scores = summarize(rows)
    summary = {"split": args.split, "protocol": plan, "n_past": n_past, "n_future": n_future,
               "test_sequences" if args.split == "test" else "val_sequences": n, "samples": n_samples,
               "seconds": round(time.time() - started, 1),
               "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
               "date": time.strftime("%Y-%m-%d"), "command": "python -m experiments.evaluate " + " ".join(sys.argv[1:])}
    summary.update({k: v for k, v in scores["model"].items() if k != "per_frame"})
    summary["baselines"] = {name: {k: v for k, v in scores[name].items() if k != "per_frame"} for name in BASELINES}
    summary["batchnorm"] = batchnorm["what"]
    summary["baselines_protocol"] = ("the same sequences and predicted frames, one deterministic guess each: blank = "
                                     "all-black frames, last = the last conditioning frame repeated, mean = the mean "
                                     "conditioning frame repeated")
    summary["model_minus_blank"] = {k: summary[k] - summary["baselines"]["blank"][k] for k in metrics}
    summary["best_baseline"] = {k: max(BASELINES, key=lambda name: summary["baselines"][name][k] * (-1 if k == "lpips" else 1))
                                for k in metrics}
    if lpips is None:
        summary["lpips"] = {"skipped": lpips_skipped}
    else:
        summary["lpips_protocol"] = "AlexNet, v0.1 linear weights, [-1, 1], grey repeated to 3 channels, best of N = lowest"
    if fvd is not None:
        summary["fvd"] = fvd.distance(torch.cat(fvd_features["real"]), torch.cat(fvd_features["fake"]))
        summary["fvd_protocol"] = (f"{n} videos, first sample, {n_past} conditioning frames prepended, I3D at 224 x 224 "
                                   f"({args.fvd_model})")
    suffix = "" if args.split == "test" else "_val"
    write_per_frame_csv(run_dir / f"prediction_per_frame{suffix}.csv", scores, list(metrics), n_past)
    plot_per_frame(run_dir / f"prediction_per_frame{suffix}.png", scores, list(metrics), n_past, config["model_name"],
                   f"{config['dataset']} {args.split}, protocol {plan['name']}: {n} sequences x {n_samples} samples")
    _update_metrics(run_dir, "prediction" if args.split == "test" else "prediction_val", summary, args.unfinished)
    print_prediction_summary(summary, lpips is not None, fvd is not None)
    return summary


def write_per_frame_csv(path, scores, metrics, n_past):
    """One row per predicted frame: the model's mean and 95% half-width of each metric, each baseline's mean."""
    import csv

    from vdsm.metrics.prediction import BASELINES

    model = scores["model"]["per_frame"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", *(f"{k}_{part}" for k in metrics for part in ("mean", "ci95")),
                         *(f"{name}_{k}_mean" for name in BASELINES for k in metrics)])
        for t in range(len(model[metrics[0]][0])):
            writer.writerow([n_past + t + 1, *(f"{float(model[k][i][t]):.5f}" for k in metrics for i in (0, 1)),
                             *(f"{float(scores[name]['per_frame'][k][0][t]):.5f}" for name in BASELINES for k in metrics)])


def plot_per_frame(path, scores, metrics, n_past, label, title):
    """Each metric per predicted frame: the model with its 95% band, the baselines in grey."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vdsm.metrics.prediction import BASELINES

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4))
    for ax, k in zip(axes, metrics):
        mean, half = scores["model"]["per_frame"][k]
        frames = range(n_past + 1, n_past + len(mean) + 1)
        ax.plot(frames, mean.numpy(), label=label)
        ax.fill_between(frames, (mean - half).numpy(), (mean + half).numpy(), alpha=0.3)
        for name, style in zip(BASELINES, (":", "--", "-.")):
            ax.plot(frames, scores[name]["per_frame"][k][0].numpy(), style, color="grey", label=f"{name} (baseline)")
        ax.set_xlabel("frame")
        ax.set_ylabel(k.upper())
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_prediction_summary(summary, lpips, fvd):
    from vdsm.metrics.prediction import BASELINES

    print(f"PSNR {summary['psnr']:.2f} ± {summary['psnr_ci95']:.2f}, SSIM {summary['ssim']:.4f} ± "
          f"{summary['ssim_ci95']:.4f}"
          + (f", LPIPS {summary['lpips']:.4f} ± {summary['lpips_ci95']:.4f}" if lpips else "")
          + (f", FVD {summary['fvd']:.1f}" if fvd else "")
          + f" ({summary['split']}, protocol {summary['protocol']['name']})", flush=True)
    gap = summary["model_minus_blank"]
    print("baselines on the same frames: " + "; ".join(
        f"{name} PSNR {summary['baselines'][name]['psnr']:.2f}, SSIM {summary['baselines'][name]['ssim']:.4f}"
        for name in BASELINES) + f"; model - blank: {gap['psnr']:+.2f} dB PSNR, {gap['ssim']:+.4f} SSIM", flush=True)


def perceptual_metric(args, device):
    """LPIPS, or (None, why) when its weights are unavailable and no --lpips-backbone was given
    (with a bad --lpips-backbone: a usage error before anything is written)."""
    from vdsm.metrics.perceptual import LPIPS, LPIPSError

    try:
        return LPIPS(args.lpips_backbone).to(device), None
    except LPIPSError as err:
        if args.lpips_backbone is not None:
            raise UsageError(str(err)) from None
        print(f"LPIPS skipped: {err}", flush=True)
        return None, str(err)


def video_metric(args, device, n_videos, frames_and_channels):
    from vdsm.metrics.fvd import FVD, MIN_VIDEOS, FVDError

    if args.fvd_model is None:
        return None
    if n_videos < MIN_VIDEOS:
        raise UsageError(f"--fvd-model: FVD needs at least {MIN_VIDEOS} videos, this plan has {n_videos}: "
                         f"raise --max-sequences")
    try:
        fvd = FVD(args.fvd_model, device)
        fvd.features(torch.zeros(2, frames_and_channels[0], frames_and_channels[1], 8, 8))  # fails now, not after hours
    except FVDError as err:
        raise UsageError(str(err)) from None
    return fvd


def main(argv=None):
    return cli_main(build_parser(), evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
