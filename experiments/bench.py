"""Benchmarks: data-loading throughput, seconds per SVI step (with peak memory), time to quality.

    python -m experiments.bench                  # data and steps, JSON to bench.json + a table
    python -m experiments.bench --only data      # data loading only
    python -m experiments.bench --only machine   # the CPU model and its fp32 matmul rate (every part records it)
    python -m experiments.bench --only steps --batch-sizes 5 10 --device cuda
    python -m experiments.bench --only quality   # train the default Sprites run (~30 min on 2 cores)
    python -m experiments.bench --only prediction --run-flags="--mnist PATH"   # SVG-LP and SRVP on SM-MNIST
                                                 # and record judge accuracy on val sequences against
                                                 # training time

Every step configuration runs in its own subprocess so that its peak RSS is its own.
Seconds per step are the median of ``--repeats`` steps after ``--warmup`` steps; the
"nets" column times the forward + backward of the same networks on the same batch
without Pyro, so ``overhead = step / nets`` is what Pyro and the ELBO add.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from experiments.registry import PREDICTION_MODELS

STEP_CONFIGS = {
    # name: (stage, model overrides or preset name, frames per sequence)
    "stage1-reference": ("stage1", {}, 16),
    "stage2-reference": ("stage2", {}, 8),
    "stage2-small": ("stage2", {"rnn_dim": 64, "rnn_layers": 1, "n_experts": 8, "dynamics_dim": 16}, 8),
    "stage1-cpu": ("stage1", "cpu", 16),
    "stage2-cpu": ("stage2", "cpu", 8),
    "svg-lp-reference": ("svg", "paper", 15),
    "svg-lp-cpu": ("svg", "cpu", 15),
    "srvp-reference": ("srvp", "paper", 15),   # the release's SM-MNIST config (DCGAN-64, ny = nz = 20, 15 frames)
    "srvp-cpu": ("srvp", "cpu", 15),
}


def bench_data(dataset="sprites", batch_size=20, num_workers=2, batches=100, sprites_layers=None, **options):
    import data

    opts = dict(options)
    if sprites_layers:
        opts["sprites_layers"] = sprites_layers
    ds = data.get_dataset(dataset, "train", **opts)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    it = iter(loader)
    next(it)  # start the workers
    started, n = time.perf_counter(), 0
    for _ in range(batches):
        x, _ = next(it)
        n += x.shape[0]
    seconds = time.perf_counter() - started
    return {"dataset": dataset, "options": options, "num_workers": num_workers, "batch_size": batch_size,
            "sequences_per_second": n / seconds}


def _model_config(stage, overrides):
    from experiments.configs import load_preset, load_svg_preset
    from models.svg import SVGConfig
    from models.vdsm import VDSMConfig

    if stage == "svg":
        return SVGConfig.from_dict(load_svg_preset("smmnist", overrides)["model"])
    if stage == "srvp":
        from models.srvp import SRVPConfig

        return SRVPConfig.from_dict(load_svg_preset("smmnist", overrides, model="srvp")["model"])
    if overrides == "cpu":
        return VDSMConfig.from_dict(load_preset("sprites", "cpu")["model"])
    return VDSMConfig(**overrides)


def _svg_pair(config, device, batch_size, seq_len):
    """SVG's model/guide and the same networks' forward + backward without Pyro (MSE + analytic KL)."""
    from vdsm.svg_api import SVG

    svg = SVG(config, device)
    nets = svg.nets
    x = torch.rand(batch_size, seq_len, config.nc, 64, 64, device=device)

    def nets_loss():
        h, skips = nets.encode(x)
        nets.forget()
        (loc, scale), _ = nets.posterior(h[:, 1:])
        (p_loc, p_scale), _ = nets.prior(h[:, :-1])
        z = loc + scale * torch.randn_like(loc)
        g, _ = nets.predictor(torch.cat([h[:, :-1], z], -1))
        mean = nets.decode(g, skips, nets.skip_sources(seq_len))
        normal = torch.distributions.Normal
        kl = torch.distributions.kl_divergence(normal(loc.float(), scale.float()),
                                               normal(p_loc.float(), p_scale.float())).sum()
        return ((mean.float() - x[:, 1:]) ** 2).sum() + config.beta * x[0, 0].numel() * kl

    return svg.model, svg.guide, x, nets_loss


def _srvp_pair(config, device, batch_size, seq_len):
    """SRVP's model/guide and the same networks' forward + backward without Pyro (the release's loss:
    Gaussian NLL up to its constant, analytic KLs, the l2_res penalty)."""
    from vdsm.srvp_api import SRVP

    srvp = SRVP(config, device)
    nets = srvp.nets
    x = torch.rand(batch_size, seq_len, config.nc, 64, 64, device=device)
    normal, kl_div = torch.distributions.Normal, torch.distributions.kl_divergence

    def nets_loss():
        h, skips = nets.encode(x)
        nets.forget()
        content, skip = nets.training_frames(batch_size, seq_len, x.device)
        w = nets.content(h, content)
        y_loc, y_scale = nets.q_y1(h)
        y = y_loc + y_scale * torch.randn_like(y_loc)
        kl = kl_div(normal(y_loc.float(), y_scale.float()), normal(0.0, 1.0)).sum()
        q_loc, q_scale = nets.q_z(h)
        ys, penalty = [y], 0.0
        for k in range(seq_len - 1):
            p_loc, p_scale = nets.p_z(y)
            z = q_loc[:, k] + q_scale[:, k] * torch.randn_like(p_loc)
            kl = kl + config.beta_z * kl_div(normal(q_loc[:, k].float(), q_scale[:, k].float()),
                                             normal(p_loc.float(), p_scale.float())).sum()
            y, p = nets.step(y, z)
            ys.append(y)
            penalty = penalty + p
        mean = nets.decode(w, torch.stack(ys, 1), skips, skip)
        return ((mean.float() - x) ** 2).sum() / (2 * config.obs_scale ** 2) + kl + config.l2_res * penalty.sum()

    return srvp.model, srvp.guide, x, nets_loss


def bench_step(name, batch_size, device="cpu", warmup=3, repeats=10, amp=False):
    """Seconds per SVI step (Trace_ELBO + Adam) of one configuration, and of its nets without Pyro.

    ``amp``: forward passes under bf16 autocast (as ``experiments.run --amp``), backward and
    optimiser in fp32 parameters as usual.
    """
    from pyro import poutine
    from pyro.infer import Trace_ELBO

    from vdsm.annealing import Schedule
    from vdsm.api import VDSM

    stage, overrides, seq_len = STEP_CONFIGS[name]
    config = _model_config(stage, overrides)
    if stage in ("svg", "srvp"):
        from vdsm.svg_api import ConstantFactors

        pair = _svg_pair if stage == "svg" else _srvp_pair
        model, guide, x, svg_nets_loss = pair(config, device, batch_size, seq_len)
        factors = ConstantFactors().factors(0.5)
    else:
        vdsm = VDSM(config, device=device)
        model, guide = (vdsm.model1, vdsm.guide1) if stage == "stage1" else (vdsm.model2, vdsm.guide2)
        if stage == "stage2":
            vdsm.model1.decoder.requires_grad_(False)
            vdsm.guide1.encoder.requires_grad_(False)
        x = torch.rand(batch_size, seq_len, config.nc, 64, 64, device=device)
        factors = Schedule().factors(0.5)
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

    def nets_step():  # the same networks, no Pyro: reparameterised samples, a plain loss
        with autocast():
            loss = svg_nets_loss() if stage in ("svg", "srvp") else vdsm_nets_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def vdsm_nets_loss():
        extra = 0.0
        z_loc, z_scale, id_loc, id_scale = guide.encoder.encode_sequences(x)
        identity = id_loc + id_scale * torch.randn_like(id_loc)
        if stage == "stage1":
            z = z_loc + z_scale * torch.randn_like(z_loc)
        else:
            d_loc, d_scale = guide.dynamics_params(z_loc)
            d = d_loc + d_scale * torch.randn_like(d_loc)
            h_seq, context = guide.frame_states(d, seq_len), guide.combiner_context(d, z_loc)
            zs, z_prev = [], guide.z_q_0.expand(batch_size, config.z_dim)
            for t in range(seq_len):
                loc, scale = guide.step(z_prev, h_seq[:, t], context[:, t])
                z_prev = loc + scale * torch.randn_like(loc)
                zs.append(z_prev)
            z = torch.stack(zs, 1)
            model.transition(z[:, :-1], d.unsqueeze(1).expand(-1, seq_len - 1, -1))[0].sum()
            if model.overshooting > 0 and seq_len > 2:  # the model's overshooting factor, same weight
                weight = model.overshooting / (seq_len - 1)
                extra = -weight * model.frame_prior.overshooting_log_prob(model, z, d).sum()
        logits = model.decoder(z, torch.softmax(factors["temp_id"] * identity, -1))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), x, reduction="sum") + extra

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
    nets = timed(nets_step)
    trace = poutine.trace(poutine.replay(model, trace=poutine.trace(guide).get_trace(x, factors=factors)))
    sites = sum(1 for s in trace.get_trace(x, factors=factors).nodes.values()
                if s["type"] == "sample" and s["name"] != "sequences")
    peak = (torch.cuda.max_memory_allocated() if torch.device(device).type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"config": name, "batch_size": batch_size, "seq_len": seq_len, "device": device, "amp": amp,
            "seconds_per_step": step, "nets_seconds": nets, "overhead": step / nets,
            "peak_memory_gb": peak / 1e9, "sample_sites": sites}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["machine", "data", "steps", "quality", "prediction"], default=None,
                   help="one part; without it: data and steps (quality takes half an hour, prediction an hour); "
                        "every part records the machine probe (CPU model, fp32 matmul rate), machine alone")
    p.add_argument("--configs", nargs="+", default=list(STEP_CONFIGS), choices=list(STEP_CONFIGS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[5, 10, 20, 40])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", action="store_true", help="bf16 autocast, as experiments.run --amp")
    p.add_argument("--sprites-layers", default=None)
    p.add_argument("--json", default="bench.json", help="where to write the results")
    q = p.add_argument_group("time to quality (--only quality)")
    q.add_argument("--quality-out", help="folder for the runs, CSV, PNG and JSON (default bench_quality; "
                                         "prediction: bench_prediction)")
    q.add_argument("--every-minutes", type=float, default=None,
                   help="training minutes between evaluations (default 3; prediction 5)")
    q.add_argument("--val-sequences", type=int, default=None,
                   help="size of the fixed subset of val sequences (default 128; prediction 64)")
    q.add_argument("--data-root", default=None)
    q.add_argument("--judge-steps", type=int, default=1500, help="training steps of the judge if none is cached")
    q.add_argument("--run-flags", default="",
                   help='extra flags for experiments.run, written with "=": --run-flags="--stage1-steps 600"')
    pq = p.add_argument_group("prediction quality against time (--only prediction; also --quality-out, "
                              "--every-minutes, --val-sequences, --run-flags)")
    pq.add_argument("--models", nargs="+", choices=list(PREDICTION_MODELS), help="default: svg-lp srvp")
    pq.add_argument("--dataset", help="a dataset the models train on (default smmnist)")
    pq.add_argument("--samples", type=int, default=None, help="futures per sequence (default: the preset's)")
    pq.add_argument("--budget-minutes", type=float, help="the budgets reported: every-minutes up to this")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one step config
    args = p.parse_args(argv)
    prediction = args.only == "prediction"
    if not prediction and any(v is not None for v in (args.models, args.dataset, args.samples, args.budget_minutes)):
        p.error("--models, --dataset, --samples and --budget-minutes belong to --only prediction")
    args.models, args.dataset = args.models or ["svg-lp", "srvp"], args.dataset or "smmnist"
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
            summary = time_to_quality(args.quality_out, every_minutes=args.every_minutes,
                                      val_sequences=args.val_sequences, run_flags=shlex.split(args.run_flags),
                                      data_root=args.data_root, sprites_layers=args.sprites_layers,
                                      judge_steps=args.judge_steps)
        except (UsageError, DataError, CheckpointError) as err:  # e.g. a bad --run-flags flag: one line, exit 2
            print(f"error: {first_line(err)}", file=sys.stderr)
            return 2
        results["quality"] = summary
        print(f"{'minutes':>8}{'stage':>8}{'step':>6}{'action':>8}{'attributes':>11}")
        for r in summary["rows"]:
            print(f"{r['train_seconds'] / 60:>8.1f}{r['stage']:>8}{r['step']:>6}"
                  f"{100 * r['action_accuracy']:>7.1f}%{100 * r['attribute_accuracy']:>10.1f}%")
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
        results["data"] = [bench_data(num_workers=w, sprites_layers=args.sprites_layers, pair_actions=pair)
                           for w in (0, 1, 2) for pair in (False, True)]
        print(f"{'data':<28}{'workers':>8}{'pairs':>7}{'seq/s':>10}")
        for r in results["data"]:
            print(f"{r['dataset']:<28}{r['num_workers']:>8}{str(r['options'].get('pair_actions')):>7}"
                  f"{r['sequences_per_second']:>10.0f}")
    if args.only in (None, "steps"):
        results["steps"], failed = [], []
        print(f"{'config':<20}{'batch':>6}{'s/step':>9}{'nets s':>9}{'ratio':>7}{'peak GB':>9}{'sites':>7}")
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
                print(f"{name:<20}{b:>6}{r['seconds_per_step']:>9.3f}{r['nets_seconds']:>9.3f}"
                      f"{r['overhead']:>7.2f}{r['peak_memory_gb']:>9.2f}{r['sample_sites']:>7}")
        results["failed"] = failed
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    if results.get("failed"):  # the others are measured and written; the exit status still tells
        print(f"failed: {' '.join(results['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
