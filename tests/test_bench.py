import csv
import json

import pytest
import torch

from experiments import run as runner
from experiments.bench import main as bench_main
from tests_helpers import tiny_run_flags
from vdsm.checkpoint import load_checkpoint


def test_time_to_quality_records_both_stages_and_leaves_training_unchanged(tmp_path, data_dirs, judge_root, capsys,
                                                                          monkeypatch):
    import data
    from vdsm.metrics import judge

    splits = []   # every split the monitoring path reads

    def recording(get):
        def get_dataset(name, split="train", *args, **kwargs):
            splits.append(split)
            return get(name, split, *args, **kwargs)
        return get_dataset

    monkeypatch.setattr(data, "get_dataset", recording(data.get_dataset))
    monkeypatch.setattr(judge, "get_dataset", recording(judge.get_dataset))
    flags = tiny_run_flags(steps=3) + ["--seed", "5"]
    out = tmp_path / "quality"
    assert bench_main(["--only", "quality", "--quality-out", str(out), "--every-minutes", "0",
                       "--val-sequences", "6", "--data-root", str(judge_root), "--judge-steps", "3",
                       "--sprites-layers", str(data_dirs.sprites), "--run-flags", " ".join(flags),
                       "--json", str(tmp_path / "bench.json")]) == 0
    with (out / "vdsm" / "time_to_quality.csv").open() as f:
        rows = list(csv.DictReader(f))
    # every-minutes 0: an evaluation after every step of both stages
    assert [(r["stage"], int(r["step"])) for r in rows] == [("stage1", k) for k in (1, 2, 3)] + \
        [("stage2", k) for k in (1, 2, 3)]
    # a stage-1 model has no dynamics latent: those rows are labelled as not the protocol
    assert [r["protocol"] for r in rows] == ["no (stage 1)"] * 3 + ["yes"] * 3
    seconds = [float(r["train_seconds"]) for r in rows]
    assert seconds == sorted(seconds) and seconds[0] > 0
    for r in rows:
        for key in ("action_accuracy", "attribute_accuracy", "all_attributes", "body", "hair", "swap_action",
                    "recon_action"):
            assert 0 <= float(r[key]) <= 1
        # the action is right only where both of its factors are
        assert float(r["action_accuracy"]) <= min(float(r["action_type"]), float(r["direction"])) + 1e-9
        heads = [float(r[h]) for h in ("body", "bottom", "top", "hair")]
        assert abs(float(r["attribute_accuracy"]) - sum(heads) / 4) < 1e-6
    summary = json.loads((out / "time_to_quality.json").read_text())
    assert summary["curves"]["vdsm"]["evaluations"] == 6 and summary["val_sequences"] == 6 and summary["split"] == "val"
    # the default run's training time is the budget: each curve is read at it (here: its own last evaluation)
    vdsm_curve = summary["curves"]["vdsm"]
    assert summary["budget_model"] == "vdsm" and summary["budget_minutes"] == round(seconds[-1] / 60, 2)
    assert vdsm_curve["action_accuracy_at_budget"] == vdsm_curve["final"]["action_accuracy"]
    assert (out / "time_to_quality.png").stat().st_size > 0
    assert "stage2" in capsys.readouterr().out
    assert "test" not in splits and {"train", "val"} <= set(splits)   # monitoring never reads the test split
    assert json.loads((tmp_path / "bench.json").read_text())["quality"]["curves"]["vdsm"]["evaluations"] == 6

    # the evaluations draw random numbers under forked_rng (CPU and CUDA generators): the same run
    # without the monitor ends with the same weights, exactly on a CPU; on CUDA up to its
    # non-deterministic kernels (drawing from training's CUDA stream moved weights by ~1e-2)
    plain = tmp_path / "plain"
    runner.run(runner.build_parser().parse_args(["--dataset", "sprites", "--out", str(plain), "--sprites-layers",
                                                 str(data_dirs.sprites), *flags]))
    exact = not torch.cuda.is_available()
    for stage in ("stage1", "stage2"):
        a = load_checkpoint(out / "vdsm" / "run" / "checkpoints" / f"{stage}.pt", "cpu")
        b = load_checkpoint(plain / "checkpoints" / f"{stage}.pt", "cpu")
        for key in ("model", "guide"):
            for name, value in a[key].items():
                same = torch.equal(value, b[key][name]) if exact else torch.allclose(value, b[key][name], rtol=1e-4,
                                                                                      atol=1e-6)
                assert same, (stage, key, name)


def test_time_to_quality_trains_several_models_one_after_the_other_into_one_figure(tmp_path, data_dirs, judge_root,
                                                                                   monkeypatch, capsys):
    out = tmp_path / "quality"
    flags = ["--f-dim", "4", "--z-dim", "3", "--g-dim", "8", "--nf", "4", "--rnn-dim", "8", "--batch-size", "3",
             "--steps", "2", "--eval-sequences", "4", "--num-workers", "0", "--no-progress"]
    common = ["--only", "quality", "--quality-out", str(out), "--every-minutes", "0",
              "--val-sequences", "6", "--data-root", str(judge_root), "--judge-steps", "3",
              "--sprites-layers", str(data_dirs.sprites), "--run-flags", " ".join(flags),
              "--json", str(tmp_path / "bench.json")]
    assert bench_main(common + ["--models", "dsa", "dbse"]) == 0
    summary = json.loads((out / "time_to_quality.json").read_text())
    assert list(summary["curves"]) == ["dsa", "dbse"]
    # without the default run's curve there is no budget to read the curves at
    assert summary["budget_minutes"] is None and summary["curves"]["dsa"]["action_accuracy_at_budget"] is None
    for model in ("dsa", "dbse"):
        rows = summary["curves"][model]["rows"]
        assert [(r["stage"], r["step"]) for r in rows] == [(model, 1), (model, 2)]
        assert all(r["protocol"] == "yes" and 0 <= r["all_attributes"] <= 1 for r in rows)
        assert json.loads((out / model / "run" / "config.json").read_text())["model_name"] == model
    assert (out / "time_to_quality.png").stat().st_size > 0
    # a later call into the same folder reuses the finished curves and trains only the new model
    from experiments import run as runner

    trained = []
    real_run = runner.run
    monkeypatch.setattr(runner, "run", lambda args, monitor: trained.append(args.model) or real_run(args, monitor))
    assert bench_main(common + ["--models", "dbse", "spyl", "dsa"]) == 0
    summary2 = json.loads((out / "time_to_quality.json").read_text())
    assert trained == ["spyl"] and list(summary2["curves"]) == ["dbse", "spyl", "dsa"]
    assert summary2["curves"]["dbse"]["rows"] == summary["curves"]["dbse"]["rows"]
    assert [summary2["curves"][m]["reused"] for m in ("dbse", "spyl", "dsa")] == [True, False, True]
    # a finished curve of other settings is refused in one line before anything trains
    capsys.readouterr()
    assert bench_main([*common[:common.index("--every-minutes")], "--every-minutes", "5",
                       *common[common.index("--every-minutes") + 2:], "--models", "dsa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other every_minutes" in err[0] and trained == ["spyl"]
    # a curve.json carried to another folder (another session, data root spelt another way, no --no-progress)
    # is reused there: where the files lie is not a setting
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "dbse").mkdir(parents=True)
    (elsewhere / "dbse" / "curve.json").write_bytes((out / "dbse" / "curve.json").read_bytes())
    (tmp_path / "root-link").symlink_to(judge_root)
    carried = [*common, "--quality-out", str(elsewhere), "--data-root", str(tmp_path / "root-link"), "--run-flags",
               " ".join(f for f in flags if f != "--no-progress"), "--models", "dbse"]
    assert bench_main(carried) == 0 and trained == ["spyl"]
    assert json.loads((elsewhere / "time_to_quality.json").read_text())["curves"]["dbse"]["reused"]
    # a run stopped before its curve was written is not mistaken for a finished one
    (out / "spyl" / "curve.json").unlink()
    assert bench_main(common + ["--models", "spyl"]) == 2
    assert "without a finished curve" in capsys.readouterr().err and trained == ["spyl"]


def test_bad_bench_input_exits_2(capsys, tmp_path):
    import pytest

    with pytest.raises(SystemExit) as stop:
        bench_main(["--only", "quality", "--val-sequences", "0"])
    assert stop.value.code == 2
    assert "--val-sequences" in capsys.readouterr().err
    # the monitor scores val sequences: a run that trains on them is refused before anything runs
    assert bench_main(["--only", "quality", "--quality-out", str(tmp_path / "q"), "--data-root", str(tmp_path),
                       "--run-flags", "--train-split trainval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--train-split trainval" in err[0]
    with pytest.raises(SystemExit) as stop:   # a model without the judge protocols
        bench_main(["--only", "quality", "--models", "srvp"])
    assert stop.value.code == 2 and "--only quality takes models" in capsys.readouterr().err
    assert bench_main(["--only", "quality", "--quality-out", str(tmp_path / "q"), "--data-root", str(tmp_path),
                       "--run-flags", "--model dsa"]) == 2
    assert "--models" in capsys.readouterr().err


def test_bench_refuses_a_flag_of_another_part_before_it_runs(capsys, tmp_path):
    import pytest

    for argv, named in ((["--only", "quality", "--repeats", "2"], "--repeats belongs to the steps part"),
                        (["--only", "machine", "--configs", "dsa-cpu"], "--configs belongs to the steps part"),
                        (["--only", "steps", "--every-minutes", "1", "--run-flags=--lr 1"],
                         "--every-minutes, --run-flags: flags of --only quality or --only prediction"),
                        (["--only", "prediction", "--judge-steps", "9"], "--judge-steps belongs to --only quality")):
        with pytest.raises(SystemExit) as stop:
            bench_main([*argv, "--json", str(tmp_path / "b.json")])
        assert stop.value.code == 2 and named in capsys.readouterr().err, argv
    assert not (tmp_path / "b.json").exists()


def test_keep_freed_memory_applies_on_glibc_and_can_be_switched_off(monkeypatch):
    import ctypes
    import sys

    from vdsm.runtime import keep_freed_memory

    monkeypatch.setenv("VDSM_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("VDSM_KEEP_FREED_MEMORY")
    try:
        glibc = sys.platform.startswith("linux") and bool(ctypes.CDLL("libc.so.6").gnu_get_libc_version)
    except (OSError, AttributeError):
        glibc = False
    assert keep_freed_memory() is glibc


def test_bench_machine_records_the_processor_and_its_matmul_rates(tmp_path, capsys, monkeypatch):
    from vdsm import runtime

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")   # only reported: the process's oneDNN already started
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    assert bench_main(["--only", "machine", "--amp", "--json", str(tmp_path / "m.json")]) == 0
    assert torch.equal(torch.rand(2), expected)        # the probe drew no numbers from the global stream
    machine = json.loads((tmp_path / "m.json").read_text())["machine"]
    assert machine["processor"] == runtime.processor_name() and machine["processor"]
    assert machine["fp32_matmul_gflops"] > 0 and machine["bf16_matmul_gflops"] > 0
    assert machine["threads"] == torch.get_num_threads() and machine["onednn_max_cpu_isa"] == "AVX2"
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"machine: {machine['processor']} (cpu, {machine['threads']} threads, ")
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in line and "fp32 matmul" in line and "bf16" in line
    slow_bf16 = dict(machine, fp32_matmul_gflops=100.0, bf16_matmul_gflops=40.0)
    assert "(2.5x slower than fp32 on this machine: --amp slows this run down; drop it)" in \
        runtime.machine_line(slow_bf16)
    assert "--amp" not in runtime.machine_line(dict(machine, bf16_matmul_gflops=400.0, fp32_matmul_gflops=100.0))


def test_every_step_config_runs_an_svi_step_with_its_sample_sites():
    """Each configuration (the cpu presets as they are now included) makes an SVI step; the site count
    does not depend on the batch size."""
    from experiments.bench import STEP_CONFIGS, _model_config, bench_step

    # stage 2: identity, dynamics, z_1..z_8, obs (and the overshooting factor where the config has it);
    # SRVP (15 frames): y_1, z_2..z_15, l2_res, obs
    # DSA (8 frames): identity, z_1..z_8, obs
    from models.registry import get

    # C-DSVAE (8 frames): DSA's and its three factors (content_nce, motion_nce, mi_fz); DBSE: DSA's and
    # first_frame; SPYL: DSA's and mi_sd, static_nce, dynamics_nce
    sites = {"stage1": 3, "stage2": 3 + 8, "svg": 2, "srvp": 1 + 14 + 2, "dsa": 1 + 8 + 1, "cdsvae": 1 + 8 + 1 + 3,
             "dbse": 1 + 8 + 1 + 1, "spyl": 1 + 8 + 1 + 3}
    for name, (model, stage, dataset, overrides, _) in STEP_CONFIGS.items():
        config = _model_config(get(model), model, dataset, overrides)
        expected = sites[stage] + (stage == "stage2" and config.overshooting > 0)
        for batch_size in (2, 3) if name == "stage2-cpu" else (2,):
            r = bench_step(name, batch_size, warmup=0, repeats=1)
            assert r["sample_sites"] == expected and r["seconds_per_step"] > 0, name


def test_bench_steps_writes_what_it_measured_and_exits_1_when_a_config_fails(tmp_path, monkeypatch):
    import types

    from experiments import bench

    out = tmp_path / "steps.json"
    argv = ["--only", "steps", "--configs", "stage2-cpu", "--batch-sizes", "2", "--warmup", "0",
            "--repeats", "1", "--json", str(out)]
    assert bench_main(argv) == 0  # the real subprocess
    written = json.loads(out.read_text())
    assert [(r["config"], r["batch_size"]) for r in written["steps"]] == [("stage2-cpu", 2)]
    assert written["failed"] == []

    measured = json.dumps(written["steps"][0])

    def fail_batch_3(cmd, **kwargs):   # batch 2 answers what the real subprocess measured above
        if "stage2-cpu:3" in cmd:
            return types.SimpleNamespace(returncode=1, stdout="", stderr="RuntimeError: boom")
        return types.SimpleNamespace(returncode=0, stdout=measured + "\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fail_batch_3)
    assert bench_main(argv[:5] + ["2", "3"] + argv[6:]) == 1
    written = json.loads(out.read_text())
    assert [r["batch_size"] for r in written["steps"]] == [2] and written["failed"] == ["stage2-cpu:3"]


def test_prediction_quality_scores_val_and_leaves_training_unchanged(tmp_path, data_dirs, monkeypatch):
    import data
    from test_srvp import SRVP_TINY

    splits = []
    get = data.get_dataset

    def recording(name, split="train", *args, **kwargs):
        splits.append(split)
        return get(name, split, *args, **kwargs)

    monkeypatch.setattr(data, "get_dataset", recording)
    flags = ["--mnist", str(data_dirs.mnist), "--data-root", str(tmp_path / "root"), "--steps", "3", "--seed", "2",
             *SRVP_TINY]
    out = tmp_path / "prediction"
    assert bench_main(["--only", "prediction", "--models", "srvp", "--quality-out", str(out), "--every-minutes", "0",
                       "--val-sequences", "3", "--samples", "2", "--run-flags", " ".join(flags),
                       "--json", str(tmp_path / "bench.json")]) == 0
    with (out / "srvp" / "prediction_quality.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]   # every-minutes 0: after every step
    for r in rows:
        assert 0 < float(r["ssim"]) <= 1 and float(r["psnr"]) > 0
    summary = json.loads((out / "prediction_quality.json").read_text())["curves"]["srvp"]
    assert (summary["val_sequences"], summary["samples"], summary["n_past"], summary["n_future"]) == (3, 2, 5, 20)
    assert (out / "prediction_quality.png").stat().st_size > 0
    assert "test" not in splits and {"train", "val"} <= set(splits)

    # the evaluations run under forked_rng in eval mode: the same run without the monitor ends
    # with the same weights
    plain = tmp_path / "plain"
    runner.run(runner.build_parser().parse_args(["--dataset", "smmnist", "--model", "srvp", "--out", str(plain),
                                                 *flags]))
    monitored = load_checkpoint(out / "srvp" / "run" / "checkpoints" / "srvp.pt", "cpu")["model"]
    for key, value in load_checkpoint(plain / "checkpoints" / "srvp.pt", "cpu")["model"].items():
        assert torch.equal(value, monitored[key]), key


def test_prediction_quality_checks_every_model_flags_before_training(tmp_path, data_dirs, capsys):
    out = tmp_path / "prediction"
    code = bench_main(["--only", "prediction", "--models", "svg-lp", "srvp", "--quality-out", str(out),
                       "--run-flags", f"--mnist {data_dirs.mnist} --ny 3", "--json", str(tmp_path / "b.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--ny" in err[0]
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_:   # prediction-only options with another part: refused
        bench_main(["--only", "steps", "--models", "srvp"])
    assert exit_.value.code == 2 and "--only prediction" in capsys.readouterr().err


def test_prediction_budgets_take_the_evaluation_due_at_each_budget():
    from experiments.prediction_quality import at_budgets

    rows = [{"train_seconds": t, "step": k, "psnr": float(k), "ssim": k / 10} for k, t in
            enumerate([300.2, 600.4, 1650.0, 1900.0], 1)]
    table = at_budgets(rows, [300, 600, 900, 1800])
    assert [r["step"] for r in table] == [1, 2, 2, 3]    # 300.2 s is the 5-minute evaluation
    assert at_budgets(rows, [100])[0]["psnr"] is None


def test_bench_writes_no_file_unless_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)   # a default file here would overwrite a tracked record, as the repository's bench.json
    assert bench_main(["--only", "machine"]) == 0
    assert capsys.readouterr().out.startswith("machine: ") and not list(tmp_path.iterdir())
