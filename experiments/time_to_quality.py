"""Time to quality: train Sprites models one after the other and score each with the judge every few minutes.

Each run is the one ``python -m experiments.run --dataset sprites --model M`` trains (cpu preset on a
machine without a GPU; VDSM by default), with a monitor called after every optimiser step. When ``every_minutes`` of
training time have passed (and at the end of each stage) the monitor runs the judge protocol of
``vdsm.metrics.protocol`` once on a fixed subset of the **val** split (characters held out of
training; the test split is for ``experiments.evaluate``'s final report only):

* action accuracy: fixed dynamics, identity from the prior, judge's action head; and each of its two
  factors alone (``action_type``: walk / spellcast / slash, ``direction``: front / left / right);
* attribute accuracy: fixed identity, dynamics from the prior, mean over the attribute heads
  (each head is also recorded), and the share with all four right at once;
* swap action accuracy: the dynamics of one val sequence with the identity of another (an identity a
  posterior gave, not the prior's): where it is kept and the prior's is not, the prior's draws fall
  where the posteriors' identities are not.

During stage 1 the same protocol uses what stage 1 has (poses of the real sequence kept, or
drawn from the N(0, I) pose prior: not the protocol, and labelled so in the "protocol" column);
from stage 2 on it uses the dynamics model. Training time
excludes the evaluations, which run under ``vdsm.train_state.forked_rng`` so the run trains exactly as
it would without the monitor. Writes ``time_to_quality.csv`` (a row per evaluation, written as
it goes) into ``out_dir/<model>/``, then one ``time_to_quality.png`` of every model's curves and
``time_to_quality.json`` (per model: first times at which each accuracy reached the target, and the
accuracies at the budget) into ``out_dir``. The budget is the training time of the default run
(``experiments.run`` without ``--model``: VDSM) on the same machine, when its curve is in the figure;
without it the figure has no budget.

Each model's finished curve is kept in ``out_dir/<model>/curve.json`` with what makes curves comparable
(its run flags, the machine, the val subset, the evaluation interval, the judge's steps): a later call
into the same ``out_dir`` reuses it instead of training again, so that a figure of several models can be
built over several sessions (five Sprites models take hours on a 2-core CPU); a curve of other settings
is refused before anything trains. Where the files lie (``--data-root``, the raw-data folders, the run
folder) and ``--no-progress`` are not settings: a ``curve.json`` copied into another ``out_dir`` on a
machine of the same processor is reused there.
"""
import csv
import json
import statistics
import time
from pathlib import Path

import torch

import data
from models.spec import JUDGE
from vdsm.metrics.judge import JUDGES, load_or_train_judge
from vdsm.checkpoint import write_text_atomic
from vdsm.metrics.protocol import judge_protocol
from vdsm.runfolder import holds_a_run
from vdsm.train_state import forked_rng

from .cli import UsageError, flag_name

__all__ = ["TimedMonitor", "QualityMonitor", "time_to_quality", "CURVE"]

#: a model's finished curve and its settings, in ``out_dir/<model>/``
CURVE = "curve.json"
#: what a curve's machine must share with this one to be drawn in the same figure
MACHINE_KEYS = ("processor", "device", "threads", "cpu_kernels", "onednn_max_cpu_isa")

ATTRIBUTES = list(JUDGES["sprites"].static)
#: the factors of the action head (motion, direction): which one a model loses with a new identity
ACTION_PARTS = [name for name, _ in JUDGES["sprites"].parts["action"]]
COLUMNS = ["train_seconds", "stage", "step", "protocol", "action_accuracy", *ACTION_PARTS, "attribute_accuracy",
           *ATTRIBUTES, "all_attributes", "swap_action", "recon_action", "recon_attributes", "eval_seconds"]


class TimedMonitor:
    """Called as ``monitor(model, stage, step, last)`` after every optimiser step: runs
    ``self.evaluate(model, stage)`` when ``every_seconds`` of training time (evaluations excluded)
    have passed and after the last step, and appends a row to ``rows`` and to the CSV of
    ``columns`` (``start()`` writes its header and starts the clock)."""

    columns = ()

    def __init__(self, csv_path, every_seconds):
        self.csv_path, self.every = Path(csv_path), every_seconds
        self.rows, self.eval_seconds, self.next_due, self.started = [], 0.0, every_seconds, None

    def start(self):
        with self.csv_path.open("w", newline="") as f:
            csv.writer(f).writerow(self.columns)
        self.started = time.perf_counter()

    def train_seconds(self):
        return time.perf_counter() - self.started - self.eval_seconds

    def __call__(self, model, stage, step, last):
        train_seconds = self.train_seconds()
        if not last and train_seconds < self.next_due:
            return
        while 0 < self.every and self.next_due <= train_seconds:  # every <= 0: after every step
            self.next_due += self.every
        t0 = time.perf_counter()
        row = {"train_seconds": round(train_seconds, 1), "stage": stage, "step": step, **self.evaluate(model, stage)}
        row["eval_seconds"] = round(time.perf_counter() - t0, 1)
        self.eval_seconds += time.perf_counter() - t0
        self.rows.append(row)
        with self.csv_path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self.columns])


class QualityMonitor(TimedMonitor):
    """The judge protocols of a VDSM run when due. ``items``: the fixed (frames, labels) pairs
    scored, from the val split."""

    columns = COLUMNS
    evaluation = JUDGE   # the runs it scores: those the judge protocols evaluate

    def __init__(self, judge, items, csv_path, every_seconds):
        super().__init__(csv_path, every_seconds)
        self.judge, self.items = judge, items
        self.start()

    @torch.no_grad()
    def evaluate(self, run, stage):
        nets = run.modules()
        modes, in_use = [m.training for m in nets], run.stage_in_use
        run.eval()
        run.use_stage(stage)
        try:
            with forked_rng(run.device):  # training continues with its own random numbers (CPU and CUDA)
                result = judge_protocol(run, self.judge, self.items, batch_size=len(self.items), repeats=1,
                                        device=run.device)
        finally:
            run.use_stage(in_use)
            for m, mode in zip(nets, modes):
                m.train(mode)
        dynamic, static = self.judge.dynamic_heads, self.judge.static_heads
        heads = {k: v["accuracy"]["mean"] for k, v in result["fix_identity"]["heads"].items()}
        consistency = {k: v["mean"] for k, v in result["consistency"]["heads"].items()}
        return {"protocol": "yes" if result["fix_dynamics"]["protocol"] else "no (stage 1)",
                "action_accuracy": statistics.fmean(result["fix_dynamics"]["heads"][k]["accuracy"]["mean"]
                                                    for k in dynamic),
                **result["per_class"]["fix_dynamics"]["action"]["parts"],
                "attribute_accuracy": statistics.fmean(heads.values()), **heads,
                "all_attributes": result["fix_identity"]["all_static"]["mean"],
                "swap_action": result["transfer"]["dynamics_of_A"]["mean"],
                "recon_action": statistics.fmean(consistency[k] for k in dynamic),
                "recon_attributes": statistics.fmean(consistency[k] for k in static)}


def first_time(rows, key, target):
    return next((r["train_seconds"] for r in rows if r[key] >= target), None)


def at_budget(rows, key, budget_seconds):
    """The last evaluation within the budget (None if there is none)."""
    inside = [r for r in rows if r["train_seconds"] <= budget_seconds]
    return inside[-1][key] if inside else None


def budget_of(curves, model):
    """The figure's budget in seconds: the training time of ``model``'s curve (the library's default run);
    None when that curve is not in ``curves`` (model -> rows)."""
    rows = curves.get(model)
    return rows[-1]["train_seconds"] if rows else None


def plot(curves, path, target, budget_seconds, budget_model):
    """One picture of every model's curves: action accuracy (identity from the prior) solid, all four
    attributes at once (dynamics from the prior) dashed; VDSM's stage-1 points are not the protocol; the
    budget (``budget_model``'s training time) as a vertical line where there is one."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    for k, (model, rows) in enumerate(curves.items()):
        colour = f"C{k}"
        minutes = [r["train_seconds"] / 60 for r in rows]
        ax.plot(minutes, [100 * r["action_accuracy"] for r in rows], "o-", color=colour, ms=3,
                label=f"{model}: action (identity from the prior)")
        ax.plot(minutes, [100 * r["all_attributes"] for r in rows], "s--", color=colour, ms=3,
                label=f"{model}: all four attributes (dynamics from the prior)")
        switch = next((r["train_seconds"] / 60 for r in rows if r["stage"] == "stage2"), None)
        if switch is not None and len(curves) == 1:
            ax.axvline(switch, color="grey", lw=0.8)
            ax.text(switch, 2, " stage 2", color="grey")
    ax.axhline(100 * target, color="red", lw=0.8, ls=":", label=f"target {100 * target:.0f}%")
    if budget_seconds is not None:
        ax.axvline(budget_seconds / 60, color="red", lw=0.8, ls="-.",
                   label=f"budget: {budget_model}'s training time ({budget_seconds / 60:.1f} min)")
    ax.set_xlabel("training wall-clock (minutes, evaluations excluded)")
    ax.set_ylabel("judge accuracy on val sequences (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))   # beside the curves, never over them
    ax.set_title("Sprites: time to quality (judge on val sequences)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve_settings(flags, machine, val_sequences, every_minutes, judge_steps):
    """What two curves must share to be drawn together: the run flags (the run folder aside), the
    machine, the val subset, the evaluation interval and the judge."""
    kept = [f for i, f in enumerate(flags) if f != "--out" and not (i and flags[i - 1] == "--out")]
    return {"flags": kept, "machine": {k: (machine or {}).get(k) for k in MACHINE_KEYS},
            "val_sequences": val_sequences, "every_minutes": every_minutes, "judge_steps": judge_steps}


#: run flags that say where the files are (each with a value) or how progress shows (none), not what trains:
#: curves that differ only in these are comparable (a curve kept from another session is reused); the run
#: folder is already left out of the settings by ``curve_settings``
PLACE_FLAGS = {"--data-root", *map(flag_name, data.FOLDER_OPTIONS.values())}
QUIET_FLAGS = {"--no-progress"}


def what_trains(flags):
    """``flags`` without the place flags (and their values) and the quiet ones."""
    kept, skip = [], False
    for flag in flags:
        name = flag.split("=")[0]
        if skip or name in QUIET_FLAGS or (name in PLACE_FLAGS and "=" in flag):
            skip = False
        elif name in PLACE_FLAGS:
            skip = True   # its value is the next word
        else:
            kept.append(flag)
    return kept


def finished_curve(path, settings):
    """The rows of the finished curve in ``path`` when its settings are ``settings`` (where files are
    aside); None when there is none; a one-line UsageError when it was measured with other settings."""
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())

    def comparable(s):
        return {**s, "flags": what_trains(s.get("flags", []))}

    stored_settings, settings = comparable(stored["settings"]), comparable(settings)
    differ = sorted(k for k in settings if stored_settings.get(k) != settings[k])
    if differ:
        raise UsageError(f"{path} holds a finished curve measured with other {', '.join(differ)}: delete it to "
                         f"train that model again, or choose another --quality-out")
    return stored["rows"]


def time_to_quality(out_dir, *, models=("vdsm",), every_minutes=3.0, val_sequences=128, run_flags=(), data_root=None,
                    sprites_layers=None, judge_steps=1500, target=0.95, machine=None):
    """Train each of ``models`` on Sprites in ``out_dir/<model>/run``, one after the other, each with a
    :class:`QualityMonitor` on the same ``val_sequences`` fixed val sequences; returns the summary.
    A model whose finished curve (``CURVE``) in ``out_dir`` has the same settings is not trained again
    (``machine``: ``vdsm.runtime.machine_summary()``, part of the settings)."""
    from experiments import run as runner
    from experiments.flags import default_model

    out_dir = Path(out_dir)
    parser = runner.build_parser()
    flags = {}
    for model in models:   # every model's flags are checked before the first run starts
        flags[model] = ["--dataset", "sprites", "--model", model, "--out", str(out_dir / model / "run"), *run_flags]
        if sprites_layers:
            flags[model] += ["--sprites-layers", str(sprites_layers)]
        if data_root:
            flags[model] += ["--data-root", str(data_root)]
        args = parser.parse_args(flags[model])
        runner.check_flags(args, runner.given_flags(args))
        if {"--model", "--out", "--resume"} & {flag.split("=")[0] for flag in run_flags}:
            raise UsageError("--run-flags: the benchmark chooses the models (--models) and the run folders; "
                             "drop --model/--out/--resume")
        if args.train_split == "trainval":  # before the judge is trained: that takes minutes
            raise UsageError("the quality monitor scores val sequences, which --train-split trainval trains on")
    settings = {model: curve_settings(flags[model], machine, val_sequences, every_minutes, judge_steps)
                for model in models}
    reused = {model: finished_curve(out_dir / model / CURVE, settings[model]) for model in models}
    for model in models:
        if reused[model] is None and holds_a_run(out_dir / model / "run"):
            raise UsageError(f"{out_dir / model / 'run'} holds a run without a finished curve (a benchmark "
                             f"stopped early): delete {out_dir / model}, or choose another --quality-out")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    options = {"seq_len": 8}
    if sprites_layers:
        options["sprites_layers"] = sprites_layers
    # the judge is trained once and cached (not counted as training time of the run)
    judge, judge_accuracy = load_or_train_judge("sprites", root=data_root, device=device, steps=judge_steps,
                                                progress=not args.no_progress, **options)
    val = data.get_dataset("sprites", "val", data_root, **options)
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(4321))[:val_sequences]
    items = [val[int(i)] for i in order]
    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": list(models),
               "run_flags": list(run_flags), "device": str(device), "threads": torch.get_num_threads(), "split": "val",
               "val_sequences": len(items), "every_minutes": every_minutes,
               "judge_val_accuracy": judge_accuracy["val"], "target": target, "budget_model": default_model(None),
               "budget_minutes": None, "curves": {}}
    for model in models:
        rows = reused[model]
        if rows is None:
            (out_dir / model).mkdir(parents=True, exist_ok=True)
            monitor = QualityMonitor(judge, items, out_dir / model / "time_to_quality.csv", 60 * every_minutes)
            runner.run(parser.parse_args(flags[model]), monitor=monitor)
            rows = monitor.rows
            write_text_atomic(out_dir / model / CURVE, json.dumps(   # a curve is either whole or absent
                {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "settings": settings[model], "rows": rows},
                indent=1))
        else:
            print(f"{model}: its finished curve in {out_dir / model / CURVE} is reused (delete it to train again)",
                  flush=True)
        summary["curves"][model] = {
            "flags": flags[model], "reused": reused[model] is not None, "evaluations": len(rows),
            "train_seconds": rows[-1]["train_seconds"] if rows else None,
            "final": rows[-1] if rows else None, "rows": rows,
            **{f"{key}_first_reaches_target_s": first_time(rows, key, target)
               for key in ("action_accuracy", "all_attributes")}}
        # the budget is known once the default run's curve is: every curve is read at it again
        curves = {m: c["rows"] for m, c in summary["curves"].items() if c["rows"]}
        budget = budget_of(curves, summary["budget_model"])
        summary["budget_minutes"] = None if budget is None else round(budget / 60, 2)
        for curve in summary["curves"].values():
            curve.update({f"{key}_at_budget": None if budget is None else at_budget(curve["rows"], key, budget)
                          for key in ("action_accuracy", "all_attributes")})
        (out_dir / "time_to_quality.json").write_text(json.dumps(summary, indent=1))
        plot(curves, out_dir / "time_to_quality.png", target, budget, summary["budget_model"])
    return summary
