"""Checkpoints, exact resume, SIGKILL safety, NaN recovery and distributed equivalence."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import data
from models import VDSMConfig
from vdsm.annealing import Schedule
from tests_helpers import MeanGuide, run_main, tiny_run_flags
from models.vdsm import VDSMRun as VDSM
from vdsm.batches import ResumableBatches
from vdsm.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from vdsm.train import TrainOptions, train_stage

REPO = Path(__file__).resolve().parents[1]
TINY = VDSMConfig(z_dim=4, n_experts=3, encoder_widths=(4, 4, 4, 4), encoder_features=8, decoder_widths=(8, 8, 4, 4),
                  dynamics_dim=3, trans_dim=4, rnn_dim=8, rnn_layers=1, rnn_dropout=0.0)


class Interrupted(Exception):
    pass


def _train(folder, sprites, steps, *, num_workers=0, stop_at=None, resume=False):
    torch.manual_seed(0)
    vdsm = VDSM(TINY)
    ds = data.get_dataset("sprites", sprites_layers=sprites, seq_len=4, pair_actions=True)
    batches = ResumableBatches(ds, 2, seed=3, num_workers=num_workers)
    checkpoints = CheckpointManager(folder, "stage1", every_steps=3, keep_last=2)
    saved = load_checkpoint(checkpoints.latest) if resume else None

    def interrupt(step, loss):
        if step == stop_at:
            raise Interrupted
        return loss

    return train_stage(vdsm.model1, vdsm.guide1, batches, schedule=Schedule(), device="cpu",
                       options=TrainOptions(steps=steps, progress=False), checkpoints=checkpoints, resume=saved,
                       fault_injector=interrupt)


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, data_dirs):
    full = _train(tmp_path / "a", data_dirs.sprites, 7)
    with pytest.raises(Interrupted):
        _train(tmp_path / "b", data_dirs.sprites, 7, stop_at=4)
    assert load_checkpoint(tmp_path / "b" / "stage1.pt")["step"] == 3
    resumed = _train(tmp_path / "b", data_dirs.sprites, 7, num_workers=1, resume=True)
    assert len(resumed["losses"]) == 4
    assert resumed["losses"] == pytest.approx(full["losses"][3:], rel=1e-6, abs=0)
    # last K periodic checkpoints kept, plus the newest and the best
    assert sorted(p.name for p in (tmp_path / "b" / "stage1").iterdir()) == ["step-0000006.pt", "step-0000007.pt"]
    assert (tmp_path / "b" / "stage1-best.pt").is_file()


def test_nan_steps_are_skipped_and_repeated_failures_roll_back(tmp_path, data_dirs):
    torch.manual_seed(0)
    vdsm = VDSM(TINY)
    ds = data.get_dataset("sprites", sprites_layers=data_dirs.sprites, seq_len=2)
    checkpoints = CheckpointManager(tmp_path, "stage1", every_steps=2, keep_last=2)
    calls = []
    bad_calls = {1} | set(range(5, 11))   # one isolated NaN, then a burst of six

    def inject(step, loss):
        calls.append(step)
        return loss * float("nan") if len(calls) - 1 in bad_calls else loss

    stats = train_stage(vdsm.model1, vdsm.guide1, ResumableBatches(ds, 2), schedule=Schedule(), device="cpu",
                        options=TrainOptions(steps=6, max_bad_steps=3, lr_drop=0.5, progress=False),
                        checkpoints=checkpoints, fault_injector=inject)
    kinds = [e["event"] for e in stats["events"]]
    assert kinds.count("non-finite loss or gradient: step skipped") == 7
    assert sum(k.startswith("rolled back to checkpoint of step 4") for k in kinds) == 2
    assert stats["rollbacks"] == 2 and stats["lr_scale"] == 0.25 and stats["steps"] == 6
    assert all(torch.isfinite(p).all() for p in vdsm.guide1.parameters())
    assert load_checkpoint(checkpoints.latest)["lr_scale"] == stats["lr_scale"]


def test_without_a_checkpoint_a_rollback_returns_to_the_starting_weights(data_dirs):
    torch.manual_seed(0)
    vdsm = VDSM(TINY)
    initial = {k: v.clone() for k, v in vdsm.guide1.state_dict().items()}
    ds = data.get_dataset("sprites", sprites_layers=data_dirs.sprites, seq_len=2)
    calls, seen = [], []

    def inject(step, loss):  # two good steps, then two non-finite ones: a rollback with no checkpoint
        calls.append(step)
        if len(calls) == 5:  # the first step after the rollback starts from the initial weights again
            seen.append(all(torch.equal(initial[k], v) for k, v in vdsm.guide1.state_dict().items()))
        return loss * float("nan") if len(calls) in (3, 4) else loss

    stats = train_stage(vdsm.model1, vdsm.guide1, ResumableBatches(ds, 2), schedule=Schedule(), device="cpu",
                        options=TrainOptions(steps=3, max_bad_steps=2, lr_drop=0.5, progress=False),
                        fault_injector=inject)
    events = [e["event"] for e in stats["events"]]
    assert any(e.startswith("rolled back to the weights the stage started from (step 0") for e in events), events
    assert seen == [True] and stats["rollbacks"] == 1 and stats["lr_scale"] == 0.5
    assert len(stats["losses"]) == 2 + 3   # two steps before, then all three again


def test_a_skipped_step_leaves_the_weights_untouched(data_dirs):
    torch.manual_seed(0)
    vdsm = VDSM(TINY)
    before = {k: v.clone() for k, v in vdsm.guide1.state_dict().items()}
    ds = data.get_dataset("sprites", sprites_layers=data_dirs.sprites, seq_len=2)
    calls = []

    def first_call_nan(step, loss):
        calls.append(step)
        return loss * float("nan") if len(calls) == 1 else loss

    stats = train_stage(vdsm.model1, vdsm.guide1, ResumableBatches(ds, 2), schedule=Schedule(), device="cpu",
                        options=TrainOptions(steps=1, progress=False), fault_injector=first_call_nan)
    assert stats["skipped_steps"] == 1 and len(calls) == 2
    after = vdsm.guide1.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the good step ran



def test_endless_faults_stop_with_a_clear_error_and_clean_weights(data_dirs):
    vdsm = VDSM(TINY)
    initial = {k: v.clone() for k, v in vdsm.guide1.state_dict().items()}
    ds = data.get_dataset("sprites", sprites_layers=data_dirs.sprites, seq_len=2)
    with pytest.raises(RuntimeError, match="rollbacks without recovering"):
        train_stage(vdsm.model1, vdsm.guide1, ResumableBatches(ds, 2), schedule=Schedule(), device="cpu",
                    options=TrainOptions(steps=3, max_bad_steps=2, max_rollbacks=1, progress=False),
                    fault_injector=lambda step, loss: loss * float("inf"))
    assert all(torch.equal(initial[k], v) for k, v in vdsm.guide1.state_dict().items())


def test_checkpoints_refuse_pickled_objects_and_damage(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"x": Interrupted("arbitrary code could run here")}, evil)
    with pytest.raises(CheckpointError, match="damaged or not a vdsm checkpoint"):
        load_checkpoint(evil)
    half = tmp_path / "half.pt"
    torch.save({"w": torch.zeros(1000)}, half)
    half.write_bytes(half.read_bytes()[:300])
    with pytest.raises(CheckpointError):
        load_checkpoint(half)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


TINY_FLAGS = [*tiny_run_flags(), "--checkpoint-every", "1", "--keep-last", "2"]


def test_sigkill_never_leaves_a_broken_checkpoint(tmp_path, data_dirs):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "experiments.run", "--dataset", "sprites", "--sprites-layers", str(data_dirs.sprites),
           "--stage", "1", "--stage1-steps", "24", *TINY_FLAGS]
    latest = out / "checkpoints" / "stage1.pt"
    for attempt, delay in enumerate([0.0, 0.37]):
        args = cmd + (["--resume", str(out)] if attempt else ["--out", str(out)])
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        before = load_checkpoint(latest)["step"] if latest.exists() else 0
        while time.time() < deadline and (not latest.exists() or load_checkpoint(latest)["step"] < before + 2):
            time.sleep(0.05)
        time.sleep(delay)   # kill at an arbitrary moment, often mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in (out / "checkpoints").rglob("*.pt"):
            state = load_checkpoint(path)  # every file that exists is complete
            assert state["stage"] == "stage1"
        assert load_checkpoint(latest)["step"] >= before + 2  # at most the work since the last checkpoint is lost
    code, _, err = run_main("run", cmd[3:] + ["--resume", out])   # the kills needed processes; the end does not
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["stage1"]["steps"] == 24


def test_checkpoints_reach_the_disk_before_they_are_named(tmp_path, monkeypatch):
    """save: data fsync'd, then renamed into place, then the folder fsync'd (the rename is durable
    when the call returns); the named copies of the manager are followed by a folder fsync too."""
    import os

    from vdsm import checkpoint

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "folder" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"
        events.append(("fsync", kind))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    checkpoint.save_checkpoint(tmp_path / "a.pt", {"w": torch.ones(3)})
    assert events == [("fsync", "file"), ("rename", "a.pt"), ("fsync", "folder")]
    events.clear()
    CheckpointManager(tmp_path, "stage1").save(5, {"w": torch.ones(3)}, loss=1.0)
    assert events[:3] == [("fsync", "file"), ("rename", "step-0000005.pt"), ("fsync", "folder")]
    assert ("rename", "stage1.pt") in events and events[-1] == ("fsync", "folder")
    assert torch.equal(load_checkpoint(tmp_path / "stage1.pt")["w"], torch.ones(3))


def test_resume_falls_back_to_the_newest_periodic_checkpoint_that_loads(tmp_path, data_dirs, caplog):
    out = tmp_path / "run"
    flags = [*tiny_run_flags(steps=None), "--stage", "1", "--checkpoint-every", "2", "--keep-last", "3",
             "--sprites-layers", str(data_dirs.sprites), "--stage2-steps", "2"]
    code, _, err = run_main("run", ["--dataset", "sprites", "--out", out, "--stage1-steps", "6", *flags])
    assert code == 0, err
    folder = out / "checkpoints"
    assert sorted(p.name for p in (folder / "stage1").iterdir()) == ["step-0000002.pt", "step-0000004.pt",
                                                                       "step-0000006.pt"]
    # a crash left the newest files damaged (replaced, not truncated in place: stage1.pt is a hard link)
    for damaged in (folder / "stage1.pt", folder / "stage1" / "step-0000006.pt"):
        data_ = damaged.read_bytes()
        damaged.unlink()
        damaged.write_bytes(data_[:len(data_) // 3])
    caplog.clear()
    code, _, err = run_main("run", ["--dataset", "sprites", "--resume", out, "--stage1-steps", "8", *flags])
    assert code == 0, err
    warning = [r.getMessage() for r in caplog.records if "did not load" in r.getMessage()]
    assert len(warning) == 1 and "step-0000004.pt" in warning[0] and "step 4" in warning[0]
    assert load_checkpoint(folder / "stage1.pt")["step"] == 8
    stats = json.loads((out / "metrics.json").read_text())["stage1"]
    assert stats["steps"] == 8


class _Frames(torch.utils.data.Dataset):
    def __init__(self):
        self.x = torch.rand(8, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], {}


def _one_step(rank, world_size, batch_size, init_file, out_file):
    import torch.distributed as dist
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    # float64: Adam's first step is lr * sign(gradient), so in float32 a gradient element that is
    # zero up to rounding (which differs between batch sizes) could flip sign and differ by 2 lr
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        vdsm = VDSM(TINY)
        batches = ResumableBatches(_Frames(), batch_size, rank=rank, world_size=world_size)
        train_stage(vdsm.model1, MeanGuide(vdsm.guide1), batches, schedule=Schedule(), device="cpu",
                    options=TrainOptions(steps=1, lr=1e-2, progress=False))
    finally:
        torch.set_default_dtype(default)
    if rank == 0:
        torch.save({k: v.clone() for k, v in [*vdsm.model1.state_dict().items(), *vdsm.guide1.state_dict().items()]},
                   out_file)
    if world_size > 1:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_combined_batch(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_one_step, args=(2, 2, str(tmp_path / "init"), str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    _one_step(0, 1, 4, None, str(tmp_path / "single.pt"))
    ddp, single = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "single.pt")
    initial = VDSM(TINY)  # sanity: the step moved the weights
    assert any(not torch.allclose(single[k], v.double()) for k, v in initial.model1.state_dict().items())
    for k in single:
        assert single[k].dtype == torch.float64
        assert torch.allclose(ddp[k], single[k], atol=1e-9, rtol=1e-8), k
