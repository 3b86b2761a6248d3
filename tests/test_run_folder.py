"""A run folder is never damaged: refusals before any write, the lock, Ctrl-C / SIGTERM with a
checkpoint, one-line errors for damaged configs and bad numbers, a full disk, unfinished runs,
evaluation results kept across a resume, file modes, leftover temp files."""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests_helpers import SHARED_RUN_FLAGS, SVG_TINY, copy_run, run_main, tiny_run_flags

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder):
    """Every file below ``folder`` with the hash of its bytes (what must not change)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != ".lock"}


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def svg_flags(data_dirs, root, *extra):
    return ["--dataset", "smmnist", "--model", "svg-lp", "--mnist", data_dirs.mnist, "--data-root", root,
            *SVG_TINY, *extra]


# ---------------------------------------------------------------- a new run never overwrites a run


@pytest.mark.parametrize("extra", [["--z-dim", "5"], ["--seed", "7", "--lr", "0.05"], []])
def test_a_new_run_into_a_run_folder_is_refused_before_anything_is_written(vdsm_run, tmp_path, data_dirs, extra):
    run = copy_run(vdsm_run.path, tmp_path / "run")
    before = snapshot(run)
    flags = [*tiny_run_flags(prior_components=4), *extra]
    code, _, err = run_main("run", ["--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", run, *flags])
    assert code == 2
    line = one_error_line(err)
    assert "already holds a run (a config.json)" in line and f"--resume {run}" in line and "--out" in line
    assert snapshot(run) == before


def test_a_folder_with_only_checkpoints_is_a_run_too(vdsm_run, tmp_path, data_dirs):
    run = copy_run(vdsm_run.path, tmp_path / "run")
    (run / "config.json").unlink()
    before = snapshot(run)
    code, _, err = run_main("run", ["--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", run,
                                    *SHARED_RUN_FLAGS])
    assert code == 2 and "already holds a run (checkpoints)" in one_error_line(err)
    assert snapshot(run) == before


def test_a_new_svg_run_into_an_svg_folder_is_refused(svg_run, tmp_path, data_dirs):
    folder, root = svg_run
    run = copy_run(folder, tmp_path / "svg")
    before = snapshot(run)
    code, _, err = run_main("run", [*svg_flags(data_dirs, root), "--out", run])
    assert code == 2 and "--resume" in one_error_line(err)
    assert snapshot(run) == before


# ---------------------------------------------------------------- the lock


HOLDER = ("import sys, time; from vdsm.runfolder import RunLock; RunLock(sys.argv[1], 'training').acquire(); "
          "print('held', flush=True); time.sleep(120)")


def hold(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_in_use_is_refused_naming_its_holder_and_a_dead_holders_lock_is_taken_over(
        svg_run, tmp_path, data_dirs, caplog):
    folder, root = svg_run
    run = copy_run(folder, tmp_path / "svg")
    holder = hold(run)
    try:
        before = snapshot(run)
        for module, argv in [("run", [*svg_flags(data_dirs, root), "--resume", run]),
                             ("evaluate", ["--run", run, "--data-root", root, "--mnist", data_dirs.mnist]),
                             ("damage", ["--run", run, "--data-root", root, "--mnist", data_dirs.mnist])]:
            code, _, err = run_main(module, argv)
            line = one_error_line(err)
            assert code == 2 and f"is in use by pid {holder.pid}" in line and "training since" in line, (module, line)
        assert snapshot(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without releasing: the kernel dropped its lock; the next command takes it over
    from vdsm.runfolder import RunLock
    with caplog.at_level("WARNING"):
        with RunLock(run, "evaluate"):
            pass
    assert f"left locked by pid {holder.pid}" in caplog.text and "taking the lock over" in caplog.text


def test_two_new_runs_into_one_folder_one_trains_the_other_is_refused(tmp_path, data_dirs):
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "experiments.run", "--dataset", "sprites", "--sprites-layers", str(data_dirs.sprites),
           "--stage", "1", "--out", str(out), *tiny_run_flags(steps=None), "--stage1-steps", "30"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is in use by pid" in refused or "already holds a run" in refused
    assert "Traceback" not in refused
    config = json.loads((out / "config.json").read_text())
    assert config["stage1"]["steps"] == 30
    assert json.loads((out / "metrics.json").read_text())["stage1"]["steps"] == 30
    assert len(list((out / "tensorboard").iterdir())) == 1   # one run wrote here


def test_temp_files_a_kill_left_are_removed_at_the_next_start(svg_run, tmp_path, data_dirs):
    folder, root = svg_run
    run = copy_run(folder, tmp_path / "svg")
    left = [run / "config.json.x1y2.tmp", run / "checkpoints" / "svg.pt.1234.tmp"]
    for path in left:
        path.write_bytes(b"partial")
    code, _, err = run_main("run", [*svg_flags(data_dirs, root), "--resume", run])
    assert code == 0, err
    assert not any(path.exists() for path in left)


# ---------------------------------------------------------------- SIGINT and SIGTERM


def train_until_running(cmd):
    """A training subprocess in its own session (a signal to the group reaches its workers too),
    returned once it has logged its first 100 steps."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "s/step over its first 100 steps" in line:
            return proc, seen
    raise AssertionError("".join(seen))


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_one_line(tmp_path, data_dirs, signum, code):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "experiments.run", "--dataset", "sprites", "--sprites-layers", str(data_dirs.sprites),
           "--stage", "1", "--out", str(out), *tiny_run_flags(steps=None), "--stage1-steps", "100000",
           "--num-workers", "1", "--checkpoint-every", "100000"]
    proc, _ = train_until_running(cmd)
    os.killpg(proc.pid, signum)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == code, rest
    last = rest.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"stopped by {name} after step ") and "Traceback" not in rest, rest
    step = int(last.split("after step ")[1].split(":")[0])
    assert step >= 100
    assert f"checkpoint {out / 'checkpoints' / 'stage1' / f'step-{step:07d}.pt'}" in last
    assert f"--resume {out}" in last
    from vdsm.checkpoint import load_checkpoint
    state = load_checkpoint(out / "checkpoints" / "stage1.pt")
    assert state["step"] == step and state["train_seconds"] > 0
    if signum == signal.SIGTERM:
        # the run is unfinished: scoring it is refused, unless asked for
        code, _, err = run_main("damage", ["--run", out, "--sprites-layers", data_dirs.sprites])
        line = one_error_line(err)
        assert code == 2 and f"stage1 at step {step} of 100000" in line and "--resume" in line and "--unfinished" in line


def test_a_second_signal_stops_at_once():
    from vdsm import stopping
    with stopping.signals_handled(), stopping.deferred():
        os.kill(os.getpid(), signal.SIGINT)       # the first waits for the step to end
        assert stopping.requested() == signal.SIGINT
        with pytest.raises(stopping.Interrupted) as stop:
            os.kill(os.getpid(), signal.SIGINT)   # the second does not
            time.sleep(1)
    assert stop.value.exit_code == 130 and stop.value.checkpoint is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handlers put back


# ---------------------------------------------------------------- damaged or hand-edited config.json


def _edit(config, how):
    if how == "not json":
        return '{"model": {"z_dim": 4,'
    if how == "missing model":
        config.pop("model")
    elif how == "missing dataset":
        config.pop("dataset")
    elif how == "string z_dim":
        config["model"]["z_dim"] = "4"
    elif how == "unknown key":
        config["model"]["z_dimm"] = 4
    elif how == "string steps":
        config["stage1"]["steps"] = "2"
    elif how == "older version":
        config["vdsm_version"] = "0.1.9"
    elif how == "no version":
        config.pop("vdsm_version")
    return json.dumps(config)


@pytest.mark.parametrize("how,message", [("not json", "is not valid JSON (line 1"),
                                         ("missing model", "has no \"model\" section"),
                                         ("missing dataset", "key 'dataset' is missing or not a string"),
                                         ("string z_dim", "model.z_dim is '4', not an int"),
                                         ("unknown key", "unknown model key 'z_dimm'"),
                                         ("string steps", "stage1.steps is '2', not an int"),
                                         ("older version", "written by vdsm 0.1.9; this is vdsm"),
                                         ("no version", "written by a vdsm before 0.2.0; this is vdsm")])
def test_a_damaged_config_json_is_one_line_in_every_command(vdsm_run, tmp_path, data_dirs, how, message):
    run = copy_run(vdsm_run.path, tmp_path / "run")
    (run / "config.json").write_text(_edit(json.loads((run / "config.json").read_text()), how))
    before = snapshot(run)
    for module, argv in [("evaluate", ["--run", run]), ("damage", ["--run", run]), ("fit_prior", ["--run", run]),
                         ("run", ["--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--resume", run,
                                  *SHARED_RUN_FLAGS])]:
        code, _, err = run_main(module, argv)
        line = one_error_line(err)
        assert code == 2 and message in line, (module, line)
    assert snapshot(run) == before
    if how.endswith("version"):   # the library's loader refuses it too, with the same line
        from models.registry import load_run
        from vdsm.runfolder import RunFolderError

        with pytest.raises(RunFolderError, match=message):
            load_run(run)


# ---------------------------------------------------------------- numbers, seeds, devices, batch sizes


@pytest.mark.parametrize("args,message", [
    (["--lr", "nan"], "--lr=nan must be a finite number"),
    (["--lr", "inf"], "--lr=inf must be a finite number"),
    (["--clip-norm", "nan"], "--clip-norm=nan must be a finite number"),
    (["--checkpoint-minutes=-inf"], "--checkpoint-minutes=-inf must be a finite number"),
    (["--stage1-temp-id-start", "nan"], "must be a finite number"),
    (["--seed=-1"], "--seed=-1 must be between 0 and 4294967295"),
    (["--seed", str(2 ** 32)], "--seed=4294967296 must be between 0"),
    (["--device", "meta"], "--device meta: the library trains on cpu and cuda only"),
    (["--device", "mps"], "--device mps: the library trains on cpu and cuda only"),
    (["--device", "tpu"], "--device tpu:"),
    (["--batch-size", "100000"], "--batch-size 100000 (stage1) is larger than the"),
])
def test_bad_numbers_and_devices_are_refused_before_the_folder_exists(args, message, tmp_path, data_dirs):
    out = tmp_path / "bad"
    code, _, err = run_main("run", ["--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", out,
                                    *tiny_run_flags(), *args])
    assert code == 2 and message in one_error_line(err), err
    assert not out.exists()


def test_a_cuda_device_this_machine_lacks_is_refused(tmp_path, data_dirs):
    from experiments.cli import UsageError, choose_device
    wanted = f"cuda:{torch.cuda.device_count()}"   # one past the last (cuda:0 on a machine without CUDA)
    with pytest.raises(UsageError, match="no CUDA device here|this machine has"):
        choose_device(wanted)


# ---------------------------------------------------------------- a full disk


def test_a_full_disk_is_one_line_and_removes_the_folder_it_made(tmp_path, data_dirs, monkeypatch):
    import vdsm.checkpoint as checkpoint

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", no_space)
    out = tmp_path / "new" / "run"
    code, _, err = run_main("run", ["--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", out,
                                    *tiny_run_flags()])
    line = one_error_line(err)
    assert code == 2 and f"no space left on the disk of {out}" in line and "MB" in line and "free" in line
    assert not out.exists()   # the folder this run made, empty, is gone


def test_a_full_disk_during_a_checkpoint_keeps_the_older_one(vdsm_run, tmp_path, data_dirs, monkeypatch):
    import vdsm.checkpoint as checkpoint
    from vdsm.checkpoint import load_checkpoint

    run = copy_run(vdsm_run.path, tmp_path / "run")
    real_fsync, written = checkpoint.os.fsync, []

    def no_space_for_checkpoints(fd):
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if ".pt." in name:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(name)
        return real_fsync(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell the files apart")
    monkeypatch.setattr(checkpoint.os, "fsync", no_space_for_checkpoints)
    code, _, err = run_main("run", ["--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--resume", run,
                                    *SHARED_RUN_FLAGS, "--stage2-steps", "4", "--checkpoint-every", "1"])
    assert code == 2 and "no space left on the disk of" in one_error_line(err)
    assert load_checkpoint(run / "checkpoints" / "stage2.pt")["step"] == 2   # the older checkpoint survives
    assert not list(run.rglob("*.tmp"))


# ---------------------------------------------------------------- unfinished runs, evaluation results, modes


def test_evaluate_refuses_an_unfinished_run_and_labels_it_when_asked(svg_run, tmp_path, data_dirs):
    from vdsm.checkpoint import load_checkpoint, save_checkpoint
    folder, root = svg_run
    run = copy_run(folder, tmp_path / "svg")
    config = json.loads((run / "config.json").read_text())
    config["train"]["steps"] = 9   # as if it were killed at step 2 of 9
    (run / "config.json").write_text(json.dumps(config))
    state = load_checkpoint(run / "checkpoints" / "svg.pt")
    state["steps"] = 9
    save_checkpoint(run / "checkpoints" / "svg.pt", state)
    argv = ["--run", run, "--data-root", root, "--mnist", data_dirs.mnist, "--max-sequences", "2", "--samples", "1",
            "--no-progress"]
    code, _, err = run_main("evaluate", argv)
    assert code == 2 and "svg at step 2 of 9" in one_error_line(err)
    code, _, err = run_main("evaluate", [*argv, "--unfinished"])
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["prediction"]["unfinished_training"] == {"svg": [2, 9]}


def test_damage_offers_only_the_networks_a_run_trained(tmp_path, data_dirs):
    from models.vdsm import VDSMRun
    out = tmp_path / "stage1"
    code, _, err = run_main("run", ["--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", out,
                                    "--stage", "1", *tiny_run_flags()])
    assert code == 0, err
    assert set(dict(VDSMRun.load(out).trained_networks().named_children())) == {"model1", "guide1"}
    code, _, err = run_main("damage", ["--run", out, "--sprites-layers", data_dirs.sprites, "--which",
                                       "model2.transition"])
    line = one_error_line(err)
    assert code == 2 and "not a part of this vdsm model" in line and "model1." in line and "model2" not in line.split(
        "choose from")[1]


def test_resume_keeps_evaluation_results_or_moves_them_aside_when_it_trains(svg_run, tmp_path, data_dirs):
    folder, root = svg_run
    run = copy_run(folder, tmp_path / "svg")
    code, _, err = run_main("evaluate", ["--run", run, "--data-root", root, "--mnist", data_dirs.mnist,
                                         "--max-sequences", "2", "--samples", "1", "--no-progress"])
    assert code == 0, err
    evaluated = json.loads((run / "metrics.json").read_text())["prediction"]
    first = json.loads((run / "metrics.json").read_text())["train"]
    code, _, err = run_main("run", [*svg_flags(data_dirs, root), "--resume", run])   # finished: trains nothing
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["prediction"] == evaluated and metrics["train"] == first
    code, _, err = run_main("run", [*svg_flags(data_dirs, root), "--resume", run, "--steps", "4"])
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert "prediction" not in metrics and metrics["before_resume"]["prediction"] == evaluated
    assert "describe the earlier weights" in metrics["before_resume"]["note"]
    # the whole run, not only the resumed part
    stats = metrics["train"]
    assert stats["steps"] == 4 and stats["resumed_at_step"] == 2
    assert stats["seconds"] > first["seconds"] and stats["seconds_this_call"] < stats["seconds"]
    assert metrics["train_seconds"] == stats["seconds"]


def test_run_files_are_readable_as_the_umask_allows(svg_run):
    folder, _ = svg_run
    umask = os.umask(0o022)
    os.umask(umask)
    for path in [folder / "config.json", folder / "metrics.json", folder / "checkpoints" / "svg.pt"]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
