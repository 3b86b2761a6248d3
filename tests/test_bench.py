import csv
import json

import torch

from experiments import run as runner
from experiments.bench import main as bench_main
from tests_helpers import tiny_run_flags
from vdsm.checkpoint import load_checkpoint


def test_time_to_quality_records_both_stages_and_leaves_training_unchanged(tmp_path, data_dirs, capsys):
    flags = tiny_run_flags(steps=3) + ["--seed", "5"]
    out = tmp_path / "quality"
    assert bench_main(["--only", "quality", "--quality-out", str(out), "--every-minutes", "0",
                       "--test-sequences", "6", "--data-root", str(tmp_path / "root"), "--judge-steps", "3",
                       "--sprites-layers", str(data_dirs.sprites), "--run-flags", " ".join(flags),
                       "--json", str(tmp_path / "bench.json")]) == 0
    with (out / "time_to_quality.csv").open() as f:
        rows = list(csv.DictReader(f))
    # every-minutes 0: an evaluation after every step of both stages
    assert [(r["stage"], int(r["step"])) for r in rows] == [("stage1", k) for k in (1, 2, 3)] + \
        [("stage2", k) for k in (1, 2, 3)]
    seconds = [float(r["train_seconds"]) for r in rows]
    assert seconds == sorted(seconds) and seconds[0] > 0
    for r in rows:
        for key in ("action_accuracy", "attribute_accuracy", "body", "hair", "recon_action"):
            assert 0 <= float(r[key]) <= 1
        heads = [float(r[h]) for h in ("body", "bottom", "top", "hair")]
        assert abs(float(r["attribute_accuracy"]) - sum(heads) / 4) < 1e-6
    summary = json.loads((out / "time_to_quality.json").read_text())
    assert summary["evaluations"] == 6 and summary["test_sequences"] == 6
    assert (out / "time_to_quality.png").stat().st_size > 0
    assert "stage2" in capsys.readouterr().out
    assert json.loads((tmp_path / "bench.json").read_text())["quality"]["evaluations"] == 6

    # the evaluations draw random numbers under fork_rng: the same run without the monitor
    # ends with exactly the same weights
    plain = tmp_path / "plain"
    runner.run(runner.build_parser().parse_args(["--dataset", "sprites", "--out", str(plain), "--sprites-layers",
                                                 str(data_dirs.sprites), *flags]))
    for stage in ("stage1", "stage2"):
        a = load_checkpoint(out / "run" / "checkpoints" / f"{stage}.pt", "cpu")
        b = load_checkpoint(plain / "checkpoints" / f"{stage}.pt", "cpu")
        for key in ("model", "guide"):
            for name, value in a[key].items():
                assert torch.equal(value, b[key][name]), (stage, key, name)


def test_bad_bench_input_exits_2(capsys):
    import pytest

    with pytest.raises(SystemExit) as stop:
        bench_main(["--only", "quality", "--test-sequences", "0"])
    assert stop.value.code == 2
    assert "--test-sequences" in capsys.readouterr().err


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
