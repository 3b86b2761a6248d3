"""Benchmarks: data-loading throughput, seconds per SVI step (with peak memory), time to quality::

    python -m experiments.bench                  # data and steps: a table (--json FILE: every number as JSON)
    python -m experiments.bench --only data      # data loading only
    python -m experiments.bench --only machine   # the CPU model and its fp32 matmul rate (every part records it)
    python -m experiments.bench --only steps --batch-sizes 5 10 --device cuda
    python -m experiments.bench --only quality   # train the default Sprites run (about an hour on 2 cores) and
                                                 # record judge accuracy on val sequences against training time
                                                 # (its training time is the budget of a figure it is in)
    python -m experiments.bench --only quality --models vdsm dsa cdsvae dbse spyl   # one after the other, one figure
                                                 # (called again into the same --quality-out: finished curves
                                                 # of the same settings are reused, the others trained)
    python -m experiments.bench --only prediction --run-flags="--mnist PATH"   # SVG-LP and SRVP on SM-MNIST

Every step configuration runs in its own subprocess so that its peak RSS is its own.
Seconds per step are the median of ``--repeats`` steps after ``--warmup`` steps.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import data
from models.registry import NAMES
from models.spec import JUDGE, PREDICTION

from .cli import DATA_ROOT_HELP

STEP_CONFIGS = {
    # name: (model, stage, dataset of the preset, model overrides or preset name, frames per sequence)
    "stage1-reference": ("vdsm", "stage1", "sprites", {}, 16),
    "stage2-reference": ("vdsm", "stage2", "sprites", {}, 8),
    "stage2-small": ("vdsm", "stage2", "sprites", {"rnn_dim": 64, "rnn_layers": 1, "n_experts": 8, "dynamics_dim": 16}, 8),
    "stage1-cpu": ("vdsm", "stage1", "sprites", "cpu", 16),
    "stage2-cpu": ("vdsm", "stage2", "sprites", "cpu", 8),
    "svg-lp-reference": ("svg-lp", "svg", "smmnist", "paper", 15),
    "svg-lp-cpu": ("svg-lp", "svg", "smmnist", "cpu", 15),
    "srvp-reference": ("srvp", "srvp", "smmnist", "paper", 15),   # the release's SM-MNIST config (DCGAN-64, 15 frames)
    "srvp-cpu": ("srvp", "srvp", "smmnist", "cpu", 15),
    "dsa-reference": ("dsa", "dsa", "sprites", "paper", 8),
    "dsa-cpu": ("dsa", "dsa", "sprites", "cpu", 8),
}


def _registered_step_configs():
    """Every one-stage registered model the table above does not name: "<name>-reference" and
    "<name>-cpu", its paper and cpu presets for the first dataset of its presets file, at the frames
    its stage trains on (so a new model is benchmarked without an edit here)."""
    from experiments.configs import load_model_preset, preset_datasets
    from models.registry import MODELS

    named = {entry[0] for entry in STEP_CONFIGS.values()}
    found = {}
    for spec in MODELS:
        if spec.name in named or len(spec.stages) != 1:
            continue
        dataset = preset_datasets(spec)[0]
        stage = spec.stages[0]
        for preset, suffix in (("paper", "reference"), ("cpu", "cpu")):
            config = spec.complete(load_model_preset(spec, dataset, preset))
            found[f"{spec.name}-{suffix}"] = (spec.name, stage.tag, dataset, preset, stage.frames(config))
    return found


STEP_CONFIGS.update(_registered_step_configs())


def bench_data(dataset="sprites", batch_size=20, num_workers=2, batches=100, sprites_layers=None, root=None,
               **options):
    opts = dict(options)
    if sprites_layers:
        opts["sprites_layers"] = sprites_layers
    ds = data.get_dataset(dataset, "train", root, **opts)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    it = iter(loader)
    next(it)  # start the workers
    started, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:   # a dataset of fewer batches: the next epoch
            it = iter(loader)
            x, _ = next(it)
        n += x.shape[0]
    seconds = time.perf_counter() - started
    return {"dataset": dataset, "options": options, "num_workers": num_workers, "batch_size": batch_size,
            "sequences_per_second": n / seconds}


def bench_videos(folder, n_videos=200, seconds=10.0, fps=30, size=(320, 240), seq_len=10, batch_size=20,
                 workers=(0, 1, 2), batches=50):
    """``--dataset videos`` on generated footage (``n_videos`` .mp4 files of ``seconds`` at ``fps``,
    ``size``; written into ``folder`` once): seconds to decode them into an empty cache, seconds to
    open the cached dataset again (its checks included), then clips per second through a DataLoader."""
    import shutil

    import data
    from data.shape_videos import write_shape_videos

    folder = Path(folder)
    videos, root = folder / f"videos-{n_videos}x{seconds:g}s-{size[0]}x{size[1]}", folder / "root"
    if not (videos / "labels.csv").is_file():
        started = time.perf_counter()
        write_shape_videos(videos, n_videos, int(seconds * fps), size=size, fps=fps)
        print(f"wrote {n_videos} videos in {time.perf_counter() - started:.0f} s", flush=True)
    shutil.rmtree(root / "videos", ignore_errors=True)
    started = time.perf_counter()
    data.get_dataset("videos", "train", root, videos=videos, seq_len=seq_len)
    decode = time.perf_counter() - started
    import data.videos as module

    module._VERIFIED.clear()   # a new process checks every cache file once
    started = time.perf_counter()
    data.get_dataset("videos", "train", root, videos=videos, seq_len=seq_len)
    reopen = time.perf_counter() - started
    rows = []
    for w in workers:
        r = bench_data("videos", batch_size, w, batches, videos=videos, seq_len=seq_len, root=root)
        rows.append({**r, "options": {"seq_len": seq_len}})
    return {"videos": n_videos, "seconds_each": seconds, "fps": fps, "size": list(size),
            "frames": int(n_videos * seconds * fps), "decode_seconds": decode, "reopen_seconds": reopen,
            "cache_bytes": sum(p.stat().st_size for p in (root / "videos").glob("*.npy")), "loading": rows}


def _model_config(spec, model, dataset, overrides):
    """The model config of a step configuration: a preset's, or the defaults with ``overrides``."""
    from experiments.configs import load_model_preset

    if isinstance(overrides, str):
        model_config = load_model_preset(spec, dataset, overrides, model)["model"]
    else:
        model_config = dict(overrides)
    return spec.config_cls.from_dict({**model_config, **spec.fixed.get(model, {})})


def bench_step(name, batch_size, device="cpu", warmup=3, repeats=10, amp=False):
    """Seconds per SVI step (the model's ELBO estimator + Adam) of one configuration.

    ``amp``: forward passes under bf16 autocast (as ``experiments.run --amp``), backward and
    optimiser in fp32 parameters as usual.
    """
    from pyro import poutine
    from pyro.infer import Trace_ELBO

    from models.registry import get

    model_name, tag, dataset, overrides, seq_len = STEP_CONFIGS[name]
    spec = get(model_name)
    config = _model_config(spec, model_name, dataset, overrides)
    run = spec.run_cls(config, device=device).use_stage(tag)
    stage = spec.stage(tag)
    for frozen in stage.frozen(run):   # as the runner: stage 1's networks in VDSM's stage 2
        frozen.requires_grad_(False)
    model, guide = stage.pair(run)
    x = torch.rand(batch_size, seq_len, config.nc, 64, 64, device=device)
    factors = stage.schedule({}).factors(0.5)
    params = list({id(p): p for m in (model, guide) for p in m.parameters() if p.requires_grad}.values())
    optimizer = torch.optim.Adam(params, lr=1e-4)
    elbo = getattr(model, "elbo", Trace_ELBO)()  # the estimator training uses (SVG: TraceMeanField_ELBO)

    def sync():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    def autocast():
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp)

    def svi_step():
        with autocast():
            loss = elbo.differentiable_loss(model, guide, x, factors=factors)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def timed(fn):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    step = timed(svi_step)
    trace = poutine.trace(poutine.replay(model, trace=poutine.trace(guide).get_trace(x, factors=factors)))
    sites = sum(1 for s in trace.get_trace(x, factors=factors).nodes.values()
                if s["type"] == "sample" and s["name"] != "sequences")
    peak = (torch.cuda.max_memory_allocated() if torch.device(device).type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"config": name, "batch_size": batch_size, "seq_len": seq_len, "device": device, "amp": amp,
            "seconds_per_step": step,
            "peak_memory_gb": peak / 1e9, "sample_sites": sites}


def build_parser():
    p = argparse.ArgumentParser(prog="python -m experiments.bench",
                                usage="python -m experiments.bench [--only PART] [flags] (--help lists them)",
                                description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["machine", "data", "steps", "quality", "prediction"], default=None,
                   help="one part; without it: data and steps (quality takes half an hour, prediction an hour); "
                        "every part records the machine probe (CPU model, fp32 matmul rate), machine alone")
    st = p.add_argument_group("seconds per SVI step (the steps part: no --only, or --only steps)")
    st.add_argument("--configs", nargs="+", choices=list(STEP_CONFIGS), metavar="CONFIG",
                    help=f"the configs timed, of {' '.join(STEP_CONFIGS)} (default: all)")
    st.add_argument("--batch-sizes", nargs="+", type=int, metavar="N",
                    help="batch sizes of the reference configs (default: 5 10 20 40)")
    st.add_argument("--repeats", type=int, help="timed steps per config (default: 10)")
    st.add_argument("--warmup", type=int, help="untimed steps before them (default: 3)")
    p.add_argument("--device", default="cpu", help="where steps and quality runs train (default: cpu)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast, as experiments.run --amp (default: off)")
    p.add_argument("--sprites-layers", default=None,
                   help="the Sprites layers folder (default: the data root's, downloaded when missing)")
    p.add_argument("--bench-videos", type=int, default=None,
                   help="--only data: generated videos of 10 s at 30 fps, 320 x 240, for the videos row (0: no row)")
    p.add_argument("--json", default=None,
                   help="a file for every measured number as JSON (default: none; --only quality and prediction "
                        "write theirs into --quality-out too)")
    q = p.add_argument_group("time to quality (--only quality)")
    q.add_argument("--quality-out", help="folder for the runs, CSV, PNG and JSON (default bench_quality; "
                                         "prediction: bench_prediction)")
    q.add_argument("--every-minutes", type=float, default=None,
                   help="training minutes between evaluations (default 3; prediction 5)")
    q.add_argument("--val-sequences", type=int, default=None,
                   help="size of the fixed subset of val sequences (default 128; prediction 64)")
    q.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    q.add_argument("--judge-steps", type=int, help="training steps of the judge if none is cached (default 1500)")
    q.add_argument("--run-flags", help='extra flags for experiments.run, written with "=": '
                                       '--run-flags="--stage1-steps 600" (default: none)')
    pq = p.add_argument_group("prediction quality against time (--only prediction; also --quality-out, "
                              "--every-minutes, --val-sequences, --run-flags)")
    p.add_argument("--models", nargs="+", choices=list(NAMES),
                   help="--only quality: Sprites models with the judge protocols, trained one after the other "
                        "(default: vdsm); --only prediction: prediction models (default: svg-lp srvp)")
    pq.add_argument("--dataset", help="a dataset the models train on (default smmnist)")
    pq.add_argument("--samples", type=int, default=None, help="futures per sequence (default: the preset's)")
    pq.add_argument("--budget-minutes", type=float, help="the budgets reported: every-minutes up to this")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one step config
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    prediction = args.only == "prediction"
    if not prediction and any(v is not None for v in (args.dataset, args.samples, args.budget_minutes)):
        p.error("--dataset, --samples and --budget-minutes belong to --only prediction")
    if args.models and args.only not in ("quality", "prediction"):
        p.error("--models belongs to --only quality or --only prediction")
    needs = PREDICTION if prediction else JUDGE
    wrong = [m for m in args.models or () if needs not in NAMES[m].evaluations]
    if wrong:
        p.error(f"--models {' '.join(wrong)}: --only {args.only} takes models "
                f"{' '.join(n for n, spec in NAMES.items() if needs in spec.evaluations)}")
    if args.bench_videos is not None and args.only not in (None, "data"):
        p.error("--bench-videos belongs to the data part (--only data, or no --only)")
    args.bench_videos = 200 if args.bench_videos is None else args.bench_videos
    step_flags = [flag for flag, value in (("--configs", args.configs), ("--batch-sizes", args.batch_sizes),
                                           ("--repeats", args.repeats), ("--warmup", args.warmup)) if value is not None]
    if step_flags and args.only not in (None, "steps"):
        p.error(f"{', '.join(step_flags)} {'belongs' if len(step_flags) == 1 else 'belong'} to the steps part "
                f"(--only steps, or no --only)")
    quality_flags = [flag for flag, value in (("--quality-out", args.quality_out), ("--every-minutes", args.every_minutes),
                                              ("--val-sequences", args.val_sequences), ("--run-flags", args.run_flags),
                                              ("--judge-steps", args.judge_steps)) if value is not None]
    if quality_flags and args.only not in ("quality", "prediction"):
        p.error(f"{', '.join(quality_flags)}: flags of --only quality or --only prediction")
    if args.judge_steps is not None and prediction:
        p.error("--judge-steps belongs to --only quality (the prediction models have no judge)")
    args.judge_steps = 1500 if args.judge_steps is None else args.judge_steps
    args.run_flags = args.run_flags or ""
    args.configs = args.configs or list(STEP_CONFIGS)
    args.batch_sizes = args.batch_sizes or [5, 10, 20, 40]
    args.repeats = 10 if args.repeats is None else args.repeats
    args.warmup = 3 if args.warmup is None else args.warmup
    args.models = args.models or (["svg-lp", "srvp"] if prediction else ["vdsm"])
    args.dataset = args.dataset or "smmnist"
    args.budget_minutes = args.budget_minutes or 30.0
    args.quality_out = args.quality_out or ("bench_prediction" if prediction else "bench_quality")
    args.every_minutes = args.every_minutes if args.every_minutes is not None else (5.0 if prediction else 3.0)
    if args.val_sequences is None:
        args.val_sequences = 64 if prediction else 128
    if args.val_sequences < 1 or args.repeats < 1 or args.warmup < 0 or min(args.batch_sizes) < 1:
        p.error("--val-sequences, --repeats and --batch-sizes must be at least 1, --warmup at least 0")
    from vdsm.runtime import keep_freed_memory, machine_line, machine_summary

    keep_freed_memory()  # as experiments.run does: training processes keep freed memory for reuse
    if args.one:
        name, batch_size = args.one.split(":")
        print(json.dumps(bench_step(name, int(batch_size), args.device, args.warmup, args.repeats, args.amp)))
        return 0
    results = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "machine": machine_summary(args.device, amp=args.amp)}
    print(machine_line(results["machine"]), flush=True)
    if args.only == "quality":
        import shlex

        from experiments.time_to_quality import time_to_quality

        from data import DataError
        from experiments.cli import UsageError, first_line
        from vdsm.checkpoint import CheckpointError

        try:
            summary = time_to_quality(args.quality_out, models=args.models, every_minutes=args.every_minutes,
                                      val_sequences=args.val_sequences, run_flags=shlex.split(args.run_flags),
                                      data_root=args.data_root, sprites_layers=args.sprites_layers,
                                      judge_steps=args.judge_steps, machine=results["machine"])
        except (UsageError, DataError, CheckpointError) as err:  # e.g. a bad --run-flags flag: one line, exit 2
            print(f"error: {first_line(err)}", file=sys.stderr)
            return 2
        results["quality"] = summary
        print(f"{'model':<8}{'minutes':>8}{'stage':>8}{'step':>7}{'action':>8}{'all four':>10}")
        for model, curve in summary["curves"].items():
            for r in curve["rows"]:
                print(f"{model:<8}{r['train_seconds'] / 60:>8.1f}{r['stage']:>8}{r['step']:>7}"
                      f"{100 * r['action_accuracy']:>7.1f}%{100 * r['all_attributes']:>9.1f}%")
        if summary["budget_minutes"] is not None:
            print(f"budget: {summary['budget_model']}'s training time, {summary['budget_minutes']:.1f} min; the last "
                  f"evaluation within it (action, all four):")
            for model, curve in summary["curves"].items():
                at = [curve[f"{key}_at_budget"] for key in ("action_accuracy", "all_attributes")]
                print(f"  {model:<8}" + "  ".join("-" if v is None else f"{100 * v:.1f}%" for v in at))
    if prediction:
        import shlex

        from experiments.prediction_quality import prediction_quality

        from data import DataError
        from experiments.cli import UsageError, first_line
        from vdsm.checkpoint import CheckpointError

        try:
            summary = prediction_quality(args.quality_out, models=args.models, dataset=args.dataset,
                                         every_minutes=args.every_minutes, val_sequences=args.val_sequences,
                                         samples=args.samples, run_flags=shlex.split(args.run_flags),
                                         budget_minutes=args.budget_minutes)
        except (UsageError, DataError, CheckpointError) as err:
            print(f"error: {first_line(err)}", file=sys.stderr)
            return 2
        results["prediction"] = summary
        print(f"{'model':<8}{'minutes':>8}{'step':>7}{'PSNR':>8}{'SSIM':>8}")
        for model, curve in summary["curves"].items():
            for r in curve["at_budgets"]:
                if r["psnr"] is not None:
                    print(f"{model:<8}{r['minutes']:>8.1f}{r['step']:>7}{r['psnr']:>8.2f}{r['ssim']:>8.3f}")
    if args.only in (None, "data"):
        results["data"] = [bench_data(num_workers=w, sprites_layers=args.sprites_layers, root=args.data_root,
                                      pair_actions=pair)
                           for w in (0, 1, 2) for pair in (False, True)]
        if args.bench_videos:
            results["videos"] = bench_videos(data.data_root(args.data_root) / "bench_videos", args.bench_videos)
            results["data"] += results["videos"]["loading"]
        print(f"{'data':<28}{'workers':>8}{'pairs':>7}{'seq/s':>10}")
        for r in results["data"]:
            print(f"{r['dataset']:<28}{r['num_workers']:>8}{str(r['options'].get('pair_actions')):>7}"
                  f"{r['sequences_per_second']:>10.0f}")
        if args.bench_videos:
            v = results["videos"]
            print(f"videos: {v['videos']} x {v['seconds_each']:g} s at {v['fps']} fps, {v['size'][0]}x{v['size'][1]} "
                  f"({v['frames']} frames): decoded in {v['decode_seconds']:.0f} s "
                  f"({v['frames'] / v['decode_seconds']:.0f} frames/s), cache {v['cache_bytes'] / 1e9:.2f} GB, "
                  f"reopened in {v['reopen_seconds']:.1f} s", flush=True)
    if args.only in (None, "steps"):
        results["steps"], failed = [], []
        print(f"{'config':<20}{'batch':>6}{'s/step':>9}{'peak GB':>9}{'sites':>7}")
        for name in args.configs:
            for b in args.batch_sizes:
                out = subprocess.run([sys.executable, "-m", "experiments.bench", "--one", f"{name}:{b}",
                                      "--device", args.device, "--repeats", str(args.repeats),
                                      "--warmup", str(args.warmup), *(["--amp"] if args.amp else [])],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    failed.append(f"{name}:{b}")
                    print(f"{name} bs {b}: failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results["steps"].append(r)
                print(f"{name:<20}{b:>6}{r['seconds_per_step']:>9.3f}{r['peak_memory_gb']:>9.2f}{r['sample_sites']:>7}")
        results["failed"] = failed
    if args.json:   # never a default file: it would overwrite a tracked record such as the repository's bench.json
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if results.get("failed"):  # the others are measured and written; the exit status still tells
        print(f"failed: {' '.join(results['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
