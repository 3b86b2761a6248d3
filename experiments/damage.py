"""The damage experiment: how predictions degrade as a trained network is damaged, a little at a time.

    python -m experiments.damage --run runs/smmnist-svg-lp-<time> [--which all encoder decoder]

A fork of the SRVP release added this probe (docs/papers.md, "The damage experiment"): predict from fixed
conditioning frames, damage the network (``--hits`` times: pick a state-dict tensor uniformly,
one of its elements uniformly, multiply it by U(0, 1)), predict again, ``--iterations`` times,
and watch the videos. Here it is also measured: PSNR and SSIM of the predictions against the
share of weights damaged, mean and spread over ``--repeats`` independent damage sequences, for
every group named in ``--which`` (``all``, or the model's submodules: the encoder, decoder,
prior, ...); the groups are ranked by fragility in a table.

What is damaged: the run's weights, in a copy in memory (the checkpoints are never written).
``--target tensor`` is the fork's choice (a tensor uniformly, then an element: small tensors such
as biases and BatchNorm weights are hit densely); ``--target weight`` makes every element equally
likely. BatchNorm running statistics and integer buffers (``num_batches_tracked``) are left out
unless ``--include-buffers`` (the fork damaged them: it walked the state dict). Predictions use
the same conditioning frames and the same random numbers at every iteration, so the curves move
with the damage only. Deterministic given ``--seed``.

VDSM runs are measured with the judge protocols of ``experiments.evaluate`` on ``--sequences``
fixed sequences (one batch, the same draws at every iteration): reconstruction (the judge agrees
on real and reconstructed sequences), generation (action accuracy with the identity drawn from
the prior; attribute accuracy with the dynamics drawn from the prior) and action transfer (both
right); its groups are the networks of the two stages (``model1.decoder``, ``guide1.encoder``,
``model2.…``, ``guide2.…``; shared ones named once).

Writes into ``--out`` (default ``RUN/damage``): ``damage_<group>.gif`` (ground truth row, then
the predictions, VDSM: reconstruction | action transfer, as damage accumulates),
``weights/<group>/iter_XXX.png`` (repeat 0: every damaged tensor, 2-D matrices as grey images,
conv kernels [out, in, kh, kw] as [out, in*kh*kw], vectors as one row, damaged positions in
red), ``damage.csv`` (a row per group, repeat and iteration), ``damage.png`` (each metric
against the share damaged: mean and spread over repeats), ``damage.json`` and ``fragility.md``
(groups ranked by the drop of the first metric).
"""
import argparse
import copy
import csv
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import data
from models.registry import MODELS, load_run
from models.spec import JUDGE
from vdsm.metrics.prediction import baseline_scores, psnr, ssim
from vdsm.viz import save_gif

from vdsm.checkpoint import write_text_atomic
from vdsm.runfolder import RunLock

from .cli import (UsageError, add_place_flags, choose_device, cli_main, flag_name, read_run_config, refuse_other_data_folders,
                  run_data_options,
                  run_data_root, unfinished_stages)

__all__ = ["Damage", "main"]


class Damage:
    """Damage to some tensors of a module, applied in place, with a record of the hit elements.

    ``candidates`` are (name, tensor) pairs; ``hit(n, generator)`` multiplies ``n`` elements by
    U(0, 1), choosing as ``target`` says; ``share()`` is the fraction of candidate elements hit
    at least once."""

    def __init__(self, candidates, target="tensor"):
        if not candidates:
            raise UsageError("nothing to damage: the chosen submodules have no tensors")
        self.names = [name for name, _ in candidates]
        self.tensors = [t for _, t in candidates]
        self.sizes = torch.tensor([t.numel() for t in self.tensors])
        self.target = target
        self.hit_mask = [torch.zeros(t.numel(), dtype=torch.bool) for t in self.tensors]

    def hit(self, n, generator):
        if self.target == "tensor":
            which = torch.randint(len(self.tensors), (n,), generator=generator)
            elements = (torch.rand(n, generator=generator) * self.sizes[which]).long()
        else:  # every element equally likely: an index into all elements
            flat = torch.randint(int(self.sizes.sum()), (n,), generator=generator)
            bounds = self.sizes.cumsum(0)
            which = torch.searchsorted(bounds, flat, right=True)
            elements = flat - (bounds[which] - self.sizes[which])
        factors = torch.rand(n, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            for k, i, u in zip(which.tolist(), elements.tolist(), factors.tolist()):
                values = self.tensors[k].view(-1)
                if values.is_floating_point():
                    values[i] *= u
                else:  # integer buffers (with --include-buffers): the product, rounded down
                    values[i] = int(values[i].item() * u)
                self.hit_mask[k][i] = True

    def share(self):
        return float(sum(m.sum() for m in self.hit_mask)) / float(self.sizes.sum())

    def picture(self, path, title):
        """The damaged tensors as grey images (2-D views, min to max, stretched to one tile each), hit
        elements in red: drawn straight into one image, since a figure per iteration (the protocol
        draws 100 per group) cost over a second each in matplotlib."""
        from PIL import Image, ImageDraw

        shown = [k for k, m in enumerate(self.hit_mask) if m.any()]
        if not shown:
            return
        (w, h), gap, label = PICTURE_TILE, 8, 12
        cols = min(4, len(shown))
        rows = (len(shown) + cols - 1) // cols
        canvas = Image.new("RGB", (gap + cols * (w + gap), 2 * label + rows * (h + label + gap)), "white")
        draw = ImageDraw.Draw(canvas)
        draw.text((gap, 4), title, fill="black")
        for n, k in enumerate(shown):
            t = self.tensors[k].detach().float().cpu()
            image = t.reshape(t.shape[0], -1) if t.dim() >= 2 else t.reshape(1, -1)
            hit = self.hit_mask[k].reshape(image.shape)
            lo, hi = image.min(), image.max()
            grey = (image - lo) / (hi - lo) if hi > lo else torch.zeros_like(image)
            # nearest-neighbour resampling to the tile; hits also marked at their scaled positions
            # (2 x 2 pixels), so that one hit in a large tensor survives the shrinking
            r, c = torch.arange(h) * image.shape[0] // h, torch.arange(w) * image.shape[1] // w
            tile = (grey[r][:, c] * 255).to(torch.uint8).unsqueeze(-1).repeat(1, 1, 3)
            marked = hit[r][:, c]
            where = hit.nonzero()
            y, x = where[:, 0] * h // image.shape[0], where[:, 1] * w // image.shape[1]
            for dy in (0, 1):
                for dx in (0, 1):
                    marked[(y + dy).clamp(max=h - 1), (x + dx).clamp(max=w - 1)] = True
            tile[marked] = torch.tensor([230, 0, 0], dtype=torch.uint8)
            x0, y0 = gap + (n % cols) * (w + gap), 2 * label + (n // cols) * (h + label + gap)
            draw.text((x0, y0), f"{self.names[k]} {tuple(t.shape)}", fill="black")
            canvas.paste(Image.fromarray(tile.numpy()), (x0, y0 + label))
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(path)


PICTURE_TILE = (240, 180)   # width, height of each tensor's picture in the weight pictures


def candidates(nets, group, include_buffers):
    """(name, tensor) pairs of ``group`` ("all" or a submodule name of ``nets``, dotted for nested
    ones), in state-dict order; a tensor shared by two modules is listed once."""
    module = nets if group == "all" else nets.get_submodule(group)
    prefix = "" if group == "all" else f"{group}."
    params = {id(p) for p in module.parameters()}
    out, seen = [], set()
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in seen or not (id(tensor) in params or include_buffers):
            continue
        seen.add(id(tensor))
        out.append((prefix + name, tensor.data if isinstance(tensor, nn.Parameter) else tensor))
    return out


def submodules(nets):
    """The groups ``--which`` accepts: the networks with weights (for a ModuleDict of model/guide
    pairs, VDSM: the networks inside each, named once even when shared)."""
    names, seen = [], set()
    for top_name, top in (nets.items() if isinstance(nets, nn.ModuleDict) else [("", nets)]):
        for name, m in top.named_children():
            if id(m) in seen or not any(True for _ in m.parameters()):
                continue
            seen.add(id(m))
            names.append(f"{top_name}.{name}" if top_name else name)
    return names


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.damage",
                                usage="python -m experiments.damage --run RUN [flags] (--help lists them)",
                                description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder of experiments.run (SVG-LP/FP, SRVP, VDSM, DSA)")
    p.add_argument("--iterations", type=int, default=100, help="damage rounds, a prediction after each (100)")
    p.add_argument("--hits", type=int, default=100, help="elements damaged per iteration (100)")
    p.add_argument("--target", choices=["tensor", "weight"], default="tensor",
                   help="tensor: a tensor uniformly, then an element (the fork); weight: every element alike")
    p.add_argument("--which", nargs="+", default=["all"],
                   help="groups damaged, each in its own experiment: all, or submodules of the model")
    p.add_argument("--repeats", type=int, default=3, help="independent damage sequences per group (3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the damage and of the sequences drawn (default 0)")
    p.add_argument("--sequences", type=int, default=8, help="sequences scored (8; VDSM: the judge's batch)")
    p.add_argument("--judge-steps", type=int, default=None,
                   help="runs the judge scores (VDSM, DSA) only: training steps of the judge if none is cached "
                        "(default 1500)")
    p.add_argument("--split", choices=["test", "val"], default="test", help="the sequences scored (default test)")
    p.add_argument("--include-buffers", action="store_true",
                   help="also damage BatchNorm running statistics and integer buffers (as the fork)")
    p.add_argument("--pictures-every", type=int, default=1,
                   help="a weight picture every N iterations of the first repeat (1; the pictures are most of the "
                        "cost on small models)")
    p.add_argument("--out", default=None, help="output folder (default RUN/damage)")
    add_place_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--unfinished", action="store_true",
                   help="damage a run whose training has not finished (refused without it; damage.json records "
                        "each stage's step)")
    return p


class PredictionSubject:
    """A prediction run (SVG, SRVP): PSNR and SSIM of futures from fixed conditioning frames."""

    metrics = ("psnr", "ssim")

    def __init__(self, api, x, n_past, n_future, seed):
        self.api, self.x, self.n_past, self.n_future, self.seed = api, x, n_past, n_future, seed
        self.nets = api.trained_networks()

    def measure(self):
        with torch.random.fork_rng(devices=_cuda(self.api.device)):
            torch.manual_seed(self.seed)  # the same draws at every iteration: only the damage changes
            pred = self.api.predict(self.x[:, :self.n_past], self.n_future)
        future, truth = pred[:, self.n_past:], self.x[:, self.n_past:]
        self.last = pred[:4]
        return {"psnr": float(psnr(future, truth).mean()), "ssim": float(ssim(future, truth).mean())}

    def shown(self):
        return self.last

    def baselines(self):
        """The trivial predictors' scores on the same frames (what a damaged model falls to or below)."""
        scores = baseline_scores(self.x[:, :self.n_past], self.x[:, self.n_past:])
        return {name: {k: float(v.mean()) for k, v in values.items()} for name, values in scores.items()}


class StaticLatentSubject:
    """A run with a static latent (VDSM, DSA, C-DSVAE): the judge protocols on fixed sequences (reconstruction: the judge agrees on real
    and reconstructed sequences; generation: action accuracy with the identity from the prior,
    attribute accuracy with the dynamics from the prior; action transfer: both right)."""

    metrics = ("reconstruction", "generation_action", "generation_attributes", "transfer")

    def __init__(self, run, judge, items, seed):
        self.run, self.judge, self.items, self.seed = run, judge, items, seed
        self.nets = run.trained_networks()
        self.x = torch.stack([it[0] for it in items[:4]]).to(run.device)

    def measure(self):
        from vdsm.metrics.protocol import judge_protocol

        with torch.random.fork_rng(devices=_cuda(self.run.device)):
            r = judge_protocol(self.run, self.judge, self.items, batch_size=len(self.items), repeats=1,
                               seed=self.seed, device=self.run.device)
            torch.manual_seed(self.seed)
            self.last = torch.cat([self.run.reconstruct(self.x), self.run.transfer_action(self.x, self.x.roll(1, 0))],
                                  -1)

        def mean_of(section, key=None):
            if "heads" not in r[section]:
                return float("nan")
            values = [v[key]["mean"] if key else v["mean"] for v in r[section]["heads"].values()]
            return sum(values) / len(values)

        transfer = r["transfer"].get("both") or r["transfer"].get("dynamics_of_A") or r["transfer"].get("identity_of_B")
        return {"reconstruction": mean_of("consistency"), "generation_action": mean_of("fix_dynamics", "accuracy"),
                "generation_attributes": mean_of("fix_identity", "accuracy"),
                "transfer": transfer["mean"] if transfer else float("nan")}

    def shown(self):
        return self.last


def check_groups(args, nets, model_name):
    groups = submodules(nets)
    unknown = [g for g in args.which if g != "all" and g not in groups]
    if unknown:
        raise UsageError(f"--which {' '.join(unknown)}: not a part of this {model_name} model; "
                         f"choose from all {' '.join(groups)}")


def _cuda(device):
    return [device.index or 0] if device.type == "cuda" else []


def damage(args):
    run_dir = Path(args.run)
    spec, config = read_run_config(run_dir)
    args.data_root = run_data_root(args, config)
    folder = refuse_other_data_folders(args, config["dataset"])
    for name in ("iterations", "hits", "repeats", "sequences", "pictures_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"{flag_name(name)}={getattr(args, name)} must be at least 1")
    device = choose_device(args.device)
    with RunLock(run_dir, "damage"):   # not while a training or an evaluation writes there
        unfinished = unfinished_stages(run_dir, spec, config, args.unfinished)
        return _damage(args, run_dir, spec, config, folder, device, unfinished)


def _damage(args, run_dir, spec, config, folder, device, unfinished):
    model_name, judged = spec.name, JUDGE in spec.evaluations
    if not judged and args.judge_steps is not None:
        scored = ", ".join(s.name for s in MODELS if JUDGE in s.evaluations)
        raise UsageError(f"--judge-steps applies to runs the judge scores ({scored}), not to this {model_name} run: "
                         f"drop it")
    if not judged:
        api = load_run(run_dir, device)
        check_groups(args, api.trained_networks(), model_name)  # before any data is read
        n_past, n_future = config["model"]["n_past"], config["eval"]["n_future"]
        sequences = data.get_dataset(config["dataset"], args.split, args.data_root,
                                     **run_data_options(args, config, seq_len=n_past + n_future))
        n = min(args.sequences, len(sequences))
        x = torch.stack([sequences[i][0] for i in range(n)]).to(device)
        subject, truth = PredictionSubject(api, x, n_past, n_future, args.seed), x[:4]
        what = f"{n} {args.split} sequences, {n_past} -> {n_future} frames"
    else:
        from vdsm.metrics.judge import judge_spec, load_or_train_judge

        options = run_data_options(args, config, seq_len=spec.stages[-1].frames(config))
        if judge_spec(config["dataset"], args.data_root, **options) is None:
            raise UsageError(f"the damage experiment of a {model_name} run is scored by a judge, and dataset "
                             f"{config['dataset']!r} has no labels: add a labels.csv (video, then one column per factor) to the video folder")
        run = load_run(run_dir, device)
        check_groups(args, run.trained_networks(), model_name)
        sequences = data.get_dataset(config["dataset"], args.split, args.data_root, **options)
        n = min(args.sequences, len(sequences))
        order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(args.seed))[:n]
        items = [sequences[int(i)] for i in order]
        judge, _ = load_or_train_judge(config["dataset"], root=args.data_root, device=device,
                                       steps=args.judge_steps or 1500, progress=not args.no_progress, accuracy_on=(),
                                       **options)
        subject = StaticLatentSubject(run, judge, items, args.seed)
        truth = torch.cat([subject.x, subject.x], -1)
        what = f"{n} {args.split} sequences, judge protocols (columns: reconstruction | action transfer)"
    out = Path(args.out) if args.out else run_dir / "damage"
    out.mkdir(parents=True, exist_ok=True)
    pristine = copy.deepcopy(subject.nets.state_dict())
    print(f"damage: {model_name} on {what}; groups {' '.join(args.which)}, {args.repeats} repeats x "
          f"{args.iterations} iterations x {args.hits} hits ({args.target}); writing {out}", flush=True)
    rows, started = [], time.time()
    bar = tqdm(total=len(args.which) * args.repeats * (args.iterations + 1), desc="damage", disable=args.no_progress,
               dynamic_ncols=True)
    for g, group in enumerate(args.which):
        shown = [truth]
        for repeat in range(args.repeats):
            subject.nets.load_state_dict(pristine)
            hurt = Damage(candidates(subject.nets, group, args.include_buffers), args.target)
            generator = torch.Generator().manual_seed(args.seed * 1000003 + 7919 * g + repeat)
            for it in range(args.iterations + 1):   # iteration 0: the undamaged model
                if it > 0:
                    hurt.hit(args.hits, generator)
                rows.append({"group": group, "repeat": repeat, "iteration": it, "share_damaged": hurt.share(),
                             **subject.measure()})
                if repeat == 0:
                    if it % max(1, args.iterations // 8) == 0 or it == args.iterations:
                        shown.append(subject.shown())
                    if it > 0 and (it % args.pictures_every == 0 or it == args.iterations):
                        hurt.picture(out / "weights" / group / f"iter_{it:03d}.png",
                                     f"{group}, iteration {it}: {100 * hurt.share():.3f}% of {int(hurt.sizes.sum())} "
                                     f"values damaged (red: hit)")
                bar.update(1)
        # rows: ground truth, then the model's frames as damage accumulates; columns: sequences
        grid = torch.cat([torch.cat(list(row), -1) for row in shown], -2)
        save_gif(grid[None], out / f"damage_{group}.gif")
    bar.close()
    subject.nets.load_state_dict(pristine)
    summary = summarise(rows, args, subject.metrics)
    summary.update({"departures": departures(args), "run": str(run_dir), "model": model_name,
                    "dataset": config["dataset"], "split": args.split,
                    "sequences": n, "what": what, "seconds": round(time.time() - started, 1),
                    "date": time.strftime("%Y-%m-%d"), "unfinished_training": unfinished,
                    "command": "python -m experiments.damage " + " ".join(sys.argv[1:])})
    if hasattr(subject, "baselines"):
        summary["baselines"] = subject.baselines()
    with open(out / "damage.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text_atomic(out / "damage.json", json.dumps(summary, indent=1))
    write_text_atomic(out / "fragility.md", fragility_table(summary))
    title = f"{model_name} on {config['dataset']}: {what}; {args.target} targets, {args.repeats} repeats"
    if summary["departures"]:
        title += "\ndeparts from the protocol: " + "; ".join(summary["departures"])
    plot(summary, out / "damage.png", title)
    print(fragility_table(summary), flush=True)
    return summary


# The protocol's settings (the fork's experiment, with the defaults); a run that changes
# them says so in its outputs.
PROTOCOL = {"iterations": 100, "hits": 100, "target": "tensor", "include_buffers": False}


def departures(args):
    """One line per protocol setting this run changes (empty for the default experiment)."""
    return [f"{key.replace('_', '-')} {getattr(args, key)} (protocol: {value})"
            for key, value in PROTOCOL.items() if getattr(args, key) != value]


def summarise(rows, args, metrics):
    groups = {}
    for group in args.which:
        curve = []
        for it in range(args.iterations + 1):
            at = [r for r in rows if r["group"] == group and r["iteration"] == it]
            entry = {"iteration": it}
            for key in ("share_damaged", *metrics):
                values = torch.tensor([r[key] for r in at], dtype=torch.float64)
                entry[key] = float(values.mean())
                entry[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
            curve.append(entry)
        first, last = curve[0], curve[-1]
        groups[group] = {"curve": curve, "share_damaged": last["share_damaged"],
                         **{f"{m}_drop": first[m] - last[m] for m in metrics}}
    return {"iterations": args.iterations, "hits": args.hits, "target": args.target, "repeats": args.repeats,
            "include_buffers": args.include_buffers, "seed": args.seed, "metrics": list(metrics), "groups": groups}


def fragility_table(summary):
    """Groups ranked by the drop of the first metric (PSNR; VDSM: reconstruction agreement)."""
    metrics = summary["metrics"]
    lines = [f"Departs from the protocol: {'; '.join(summary['departures'])}\n" if summary.get("departures") else ""]
    lines += [f"| group | share damaged after {summary['iterations']} x {summary['hits']} hits | "
             + " | ".join(f"{m} drop" for m in metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    ranked = sorted(summary["groups"].items(), key=lambda kv: -kv[1][f"{metrics[0]}_drop"])
    for group, g in ranked:
        lines.append(f"| {group} | {100 * g['share_damaged']:.3f}% | "
                     + " | ".join(f"{g[f'{m}_drop']:.4f}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def plot(summary, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = summary["metrics"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    axes = axes[0]
    for group, g in summary["groups"].items():
        share = [100 * c["share_damaged"] for c in g["curve"]]
        for ax, key in zip(axes, metrics):
            mean = torch.tensor([c[key] for c in g["curve"]])
            std = torch.tensor([c[f"{key}_std"] for c in g["curve"]])
            ax.plot(share, mean.numpy(), label=group)
            ax.fill_between(share, (mean - std).numpy(), (mean + std).numpy(), alpha=0.25)
    labels = {"psnr": "PSNR (dB)", "ssim": "SSIM"}
    for ax, key in zip(axes, metrics):
        label = labels.get(key, f"{key.replace('_', ' ')} (judge)")
        ax.set_xlabel("share of the group's values damaged (%)")
        ax.set_ylabel(label)
        ax.set_xscale("symlog", linthresh=0.01)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    return cli_main(build_parser(), damage, argv)


if __name__ == "__main__":
    sys.exit(main())
