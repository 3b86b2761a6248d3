import json
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine

import data
from tests_helpers import SHARED_RUN_FLAGS, copy_run, run_main, tiny_run_flags
from models.vdsm import VDSMRun as VDSM

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = tiny_run_flags()
OUTPUTS = ["config.json", "checkpoints/stage1.pt", "checkpoints/stage2.pt", "reconstructions.png", "samples.gif",
           "identity_swap.png", "action_transfer.png", "action_transfer.gif", "metrics.json", "tensorboard"]


def run_cli(*args):
    """``python -m experiments.run ARGS`` in this process: (exit code, stdout, stderr)."""
    return run_main("run", args)


@pytest.fixture
def tiny_run(vdsm_run):
    return vdsm_run.path


def test_tiny_end_to_end_run_writes_every_output(vdsm_run):
    for name in OUTPUTS:
        assert (vdsm_run.path / name).exists(), name
    metrics = json.loads((vdsm_run.path / "metrics.json").read_text())
    assert metrics["stage1"]["steps"] == 2 and metrics["stage2"]["steps"] == 2
    assert metrics["evaluation"]["recon_mse_per_pixel"] > 0
    assert list((vdsm_run.path / "tensorboard").iterdir())
    # the machine every time of the run was measured on: printed first, recorded with the times
    machine = [line for line in vdsm_run.stdout.splitlines() if line.startswith("machine: ")]
    assert len(machine) == 1 and "fp32 matmul" in machine[0] and "GFLOP/s" in machine[0]
    assert metrics["machine"]["fp32_matmul_gflops"] > 0 and metrics["machine"]["processor"] in machine[0]


def test_trained_run_loads_through_the_api(tiny_run, data_dirs):
    import data
    vdsm = VDSM.load(tiny_run).eval()
    assert vdsm.has_stage2
    x = torch.stack([data.get_dataset("sprites", "test", sprites_layers=data_dirs.sprites)[i][0] for i in range(2)])
    assert vdsm.transfer_action(x, x.flip(0)).shape == x.shape


def test_resume_of_a_finished_run_skips_training(tiny_run, tmp_path, data_dirs):
    run = copy_run(tiny_run, tmp_path / "finished")
    kept = ["stage1.pt", "stage2.pt", "identity_prior.pt", "dynamics_prior.pt"]
    before = {name: (run / "checkpoints" / name).stat().st_mtime_ns for name in kept}
    summaries = {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k.endswith("_prior")}
    code, _, err = run_cli("--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--resume", run,
                           *SHARED_RUN_FLAGS)
    assert code == 0, err
    # nothing trained, so the fitted priors are the run's own, not fitted again
    assert {name: (run / "checkpoints" / name).stat().st_mtime_ns for name in kept} == before
    metrics = json.loads((run / "metrics.json").read_text())
    assert {k: metrics[k] for k in summaries} == summaries and set(summaries) == {"identity_prior", "dynamics_prior"}


def test_custom_guide_through_the_runner(tmp_path, data_dirs):
    out = tmp_path / "custom"
    code, _, err = run_cli("--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", out,
                           "--guide2", "guides.examples:mean_field", *TINY_FLAGS)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["guide2"] == "guides.examples:mean_field"
    assert config["model"]["overshooting"] > 0  # the preset's overshooting factor trained with this guide too
    assert VDSM.load(out).guide2.__class__.__name__ == "MeanFieldStage2Guide"


@pytest.mark.parametrize("args,message", [
    (["--dataset", "nope"], "unknown dataset"),
    (["--dataset", "sprites", "--model", "gan"], "unknown model"),
    (["--dataset", "sprites", "--preset", "huge"], "unknown preset"),
    (["--dataset", "sprites", "--sprites-layers", "/nonexistent"], "--sprites-layers"),
    (["--dataset", "sprites", "--z-dim", "0"], "z_dim=0"),
    (["--dataset", "sprites", "--batch-size", "0"], "--batch-size=0"),
    (["--dataset", "sprites", "--stage1-lr-decay-frac", "1.5"], "bad stage1 schedule: lr_decay_frac=1.5"),
    (["--dataset", "sprites", "--identity-scale-max", "-1"], "identity_scale_max=-1"),
    (["--dataset", "sprites", "--guide-pose-input", "1.5"], "guide_pose_input=1.5"),
    (["--dataset", "sprites", "--guide-pose-input", "0"], "--no-guide-pose-residual"),
    (["--dataset", "sprites", "--overshooting", "-1"], "overshooting=-1"),
    (["--dataset", "sprites", "--model", "dsa", "--overshooting", "1"], "--overshooting only applies to --model vdsm"),
    (["--dataset", "sprites", "--resume", "/nonexistent/run"], "--resume"),
    (["--dataset", "sprites", "--guide2", "no.such:thing"], "guide factory"),
    (["--dataset", "kth"], "no vdsm cpu preset for dataset 'kth'"),
    # flags of another model or dataset are refused, not ignored
    (["--dataset", "sprites", "--arch", "vgg"], "--arch only applies to --model svg-lp"),
    (["--dataset", "sprites", "--n-future", "3", "--eval-samples", "2"], "--eval-samples, --n-future only apply"),
    (["--dataset", "smmnist", "--model", "svg-lp", "--guide2", "guides.examples:mean_field"], "--guide2 only applies"),
    (["--dataset", "smmnist", "--model", "svg-fp", "--stage1-steps", "3"], "--stage1-steps only applies"),
    (["--dataset", "smmnist", "--model", "svg-lp", "--seq-len", "3"], "--seq-len only applies"),
    (["--dataset", "smmnist", "--model", "svg-lp", "--n-experts", "3"], "--n-experts only applies"),
    (["--dataset", "smmnist", "--model", "svg-lp", "--stage", "1"], "--stage only applies"),
    (["--dataset", "sprites", "--kth", "/tmp"], "--kth does not apply to --dataset sprites"),
    (["--dataset", "pendulum", "--mnist", "/tmp/m.npz"], "needs no data folder"),
    # values that would fail later (a Pyro traceback after config.json was written) fail first
    (["--dataset", "sprites", "--stage1-anneal-end-id", "0"], "anneal_end_id=0.0 must be positive"),
    (["--dataset", "sprites", "--stage2-temp-id-end", "-1"], "temp_id_end=-1.0 must be positive"),
    (["--dataset", "sprites", "--stage1-midfrac1", "0.9"], "midfrac1=0.9"),
    (["--dataset", "sprites", "--encoder-widths", "4", "4", "4"], "encoder_widths=[4, 4, 4]"),
    (["--dataset", "sprites", "--emission", "normal", "--emission-scale", "0"], "emission_scale=0.0"),
    (["--dataset", "sprites", "--clip-norm", "-1"], "--clip-norm=-1.0"),
    (["--dataset", "smmnist", "--model", "svg-lp", "--emission-scale", "0"], "emission_scale=0.0"),
    (["--dataset", "smmnist", "--model", "svg-lp", "--eval-samples", "0"], "--eval-samples=0"),
    (["--dataset", "sprites", "--resume", "/nonexistent/a", "--out", "/nonexistent/b"], "name different folders"),
])
def test_bad_input_returns_2_with_one_line(args, message, tmp_path, capsys):
    from experiments.run import main
    assert main([*map(str, args), "--out", str(tmp_path / "bad")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "bad").exists()  # nothing is created before the input is checked


def test_bad_input_from_the_shell_exits_2_without_traceback(tmp_path):
    """The one refusal that goes through a new interpreter, as a user's shell runs it."""
    result = subprocess.run([sys.executable, "-m", "experiments.run", "--dataset", "sprites", "--sprites-layers",
                             str(tmp_path / "missing"), "--out", str(tmp_path / "bad")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_the_preset_is_printed_and_recorded_with_its_reason(tiny_run, tmp_path, data_dirs):
    config = json.loads((tiny_run / "config.json").read_text())
    if not torch.cuda.is_available():
        assert config["preset"] == "cpu" and config["preset_reason"].startswith("default without a GPU")
    out = tmp_path / "explicit"
    code, stdout, err = run_cli("--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", out,
                                "--preset", "cpu", "--stage", "1", *TINY_FLAGS)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["preset_reason"] == "--preset cpu"
    assert "preset cpu (--preset cpu)" in stdout.splitlines()[0]


def test_resume_extends_a_stage_and_keeps_its_schedule_length(tiny_run, tmp_path, data_dirs, monkeypatch):
    from models.vdsm import VDSMRun

    run = copy_run(tiny_run, tmp_path / "extended")
    identity_prior = (run / "checkpoints" / "identity_prior.pt").stat().st_mtime_ns
    refits = []   # the fit itself (a pass over every training sequence) runs in the shared run and fit_prior's test
    monkeypatch.setattr(VDSMRun, "fit_and_save", lambda vdsm, run_dir, train, val, components, **kw:
                        refits.append(dict(components)) or {latent: {"refitted": True} for latent in components})
    code, stdout, err = run_cli("--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--resume", run,
                                "--stage2-steps", 5, *SHARED_RUN_FLAGS)
    assert code == 0, err
    assert "stage2.steps extended 2 -> 5 steps" in stdout
    # stage 2 trained on: its dynamics prior is fitted again; the identity prior (stage 1's) is kept
    assert refits == [{"dynamics": 4}]
    assert (run / "checkpoints" / "identity_prior.pt").stat().st_mtime_ns == identity_prior
    config = json.loads((run / "config.json").read_text())
    assert config["stage2"]["steps"] == 5 and config["stage2"]["schedule_steps"] == 2
    assert config["stage1"]["steps"] == 2 and config["stage1"]["schedule_steps"] is None
    assert [e["section"] for e in config["extended"]] == ["stage2"]
    saved = torch.load(run / "checkpoints" / "stage2.pt", weights_only=True)
    assert saved["step"] == 5 and saved["schedule_steps"] == 2
    assert json.loads((run / "metrics.json").read_text())["stage2"]["steps"] == 5


@pytest.mark.parametrize("flags,message", [
    (["--stage2-steps", "1"], "stage2.steps would shrink from 2 to 1"),
    (["--stage1-steps", "4"], "stage 2 was trained on this stage 1"),
    (["--lr", "0.5"], "stage1.lr (run: 0.002, asked: 0.5)"),
    (["--seed", "3"], "seed (run: 0, asked: 3)"),
    (["--stage1-start-t", "5"], "stage1.schedule.start_t"),
    (["--clip-norm", "3"], "clip_norm"),
    (["--train-split", "trainval"], "train_split"),
    (["--guide2", "guides.examples:mean_field"], "guide2"),
    (["--preset", "paper"], "--preset cpu, not paper"),
    (["--model", "svg-lp"], "that run is --model vdsm"),
])
def test_resume_refuses_flags_that_contradict_the_run(tiny_run, tmp_path, data_dirs, flags, message):
    run = copy_run(tiny_run, tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    flags = [*flags, *([] if "--model" in flags else SHARED_RUN_FLAGS)]
    code, _, err = run_cli("--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--resume", run, *flags)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before   # nothing written


def test_resume_alone_continues_an_unfinished_run(tiny_run, tmp_path, monkeypatch):
    """``--resume RUN`` with no other flag: the dataset, the model, the data folder and the config come
    from the run's config.json, and training goes on from the newest checkpoint."""
    from models.vdsm import VDSMRun
    from vdsm.checkpoint import load_checkpoint, save_checkpoint

    run = copy_run(tiny_run, tmp_path / "unfinished")
    config = json.loads((run / "config.json").read_text())
    config["stage2"]["steps"] = 4   # as if stopped at step 2 of 4
    (run / "config.json").write_text(json.dumps(config))
    state = load_checkpoint(run / "checkpoints" / "stage2.pt")
    state["steps"] = 4
    save_checkpoint(run / "checkpoints" / "stage2.pt", state)
    monkeypatch.setattr(VDSMRun, "fit_and_save", lambda vdsm, run_dir, train, val, components, **kw:
                        {latent: {"refitted": True} for latent in components})
    code, stdout, err = run_cli("--resume", run)
    assert code == 0, err
    assert f"resuming {run}: vdsm on sprites" in stdout
    assert torch.load(run / "checkpoints" / "stage2.pt", weights_only=True)["step"] == 4
    assert json.loads((run / "metrics.json").read_text())["stage2"]["resumed_at_step"] == 2


def test_a_new_run_without_dataset_is_one_line(tmp_path):
    code, _, err = run_cli("--out", tmp_path / "x")
    assert code == 2 and err.strip() == f"error: --dataset is required for a new run: one of {', '.join(data.DATASETS)}"
    assert not (tmp_path / "x").exists()


def test_out_naming_a_file_is_one_line_and_leaves_the_file(tmp_path, data_dirs):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, _, err = run_cli("--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", target, *TINY_FLAGS)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "is a file, not a folder" in err, err
    assert target.read_text() == "mine"
    code, _, err = run_cli("--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", target / "run",
                           *TINY_FLAGS)   # a folder below a file
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is a file, not a folder" in err, err


def test_out_in_a_place_that_cannot_be_written_is_one_line(tmp_path, data_dirs):
    # /sys refuses new folders to every user, root included (a chmod'ed folder would not stop root)
    target = Path("/sys") / "vdsm-test-run" / "run"
    code, _, err = run_cli("--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", target, *TINY_FLAGS)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "vdsm-test-run" in err and "write" in err, err
    assert not target.parent.exists()


def test_resume_of_another_dataset_is_refused(tiny_run):
    code, _, err = run_cli("--dataset", "sprites-dsa", "--resume", tiny_run)
    assert code == 2 and "trained on 'sprites'" in err


def test_help_lists_the_main_options():
    code, stdout, _ = run_cli("--help")
    assert code == 0
    for flag in ("--dataset", "--preset", "--device", "--resume", "--stage", "--z-dim", "--stage1-temp-id-start"):
        assert flag in stdout


def _shown_actions(parser):
    import argparse

    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS and a.dest != "help"]


@pytest.mark.parametrize("dataset", [None, "sprites", "smmnist", "videos"])
def test_help_shows_the_chosen_models_flags_each_with_a_help_line_and_its_default(dataset):
    from experiments.flags import build_parser, own_flags
    from models import registry

    for name, spec in registry.NAMES.items():
        shown = _shown_actions(build_parser(name, dataset))
        # what names a thing rather than a setting has no default: the dataset, the run, the raw data
        no_default = {"dataset", "resume", *data.FOLDER_OPTIONS.values(), *data.DATASET_OPTIONS.get(dataset, {})}
        for action in shown:
            assert action.help and ("(default" in action.help or action.dest in no_default), (name, action.dest)
        dests = {a.dest for a in shown}
        assert own_flags(name, spec) <= dests, (name, own_flags(name, spec) - dests)
        others = set().union(*(own_flags(n, s) for n, s in registry.NAMES.items() if s is not spec)) - own_flags(name, spec)
        assert not dests & others, (name, dests & others)   # another model's flags are parsed, not shown


def test_the_help_of_a_model_fits_a_screen_and_shows_the_presets_values():
    code, stdout, _ = run_cli("--model", "cdsvae", "--help")
    assert code == 0 and len(stdout.splitlines()) < 100
    assert "--weight-content" in stdout and "--n-experts" not in stdout and "--stage1-temp-id-start" not in stdout
    from experiments.configs import load_model_preset
    from models.registry import get

    preset = load_model_preset(get("cdsvae"), "sprites", "cpu")
    code, stdout, _ = run_cli("--dataset", "sprites", "--model", "cdsvae", "--preset", "cpu", "--help")
    assert code == 0
    z_dim = next(line for line in stdout.splitlines() if line.strip().startswith("--z-dim"))
    assert z_dim.endswith(f"(default: {preset['model']['z_dim']})") and preset["model"]["z_dim"] != 32
    assert "--sprites-layers" in stdout and "--mnist" not in stdout   # the dataset's own data flag


def test_every_config_field_has_a_help_line():
    import dataclasses

    from models import registry
    from models.config import field_help
    from vdsm.annealing import Schedule

    for cls in [spec.config_cls for spec in registry.MODELS] + [Schedule]:
        missing = [f.name for f in dataclasses.fields(cls) if not field_help(cls, f.name)]
        assert not missing, (cls.__name__, missing)


def test_one_name_per_concept_across_models():
    """A concept has one flag in every model that has it: the per-frame latent, the recurrent width, the
    pixel likelihood's scale."""
    import dataclasses

    from models import registry

    names = set().union(*({f.name for f in dataclasses.fields(spec.config_cls)} for spec in registry.MODELS))
    assert not names & {"nz", "rnn_size", "pixel_scale", "obs_scale"}
    for spec in registry.MODELS:
        fields = {f.name for f in dataclasses.fields(spec.config_cls)}
        assert "z_dim" in fields and "rnn_dim" in fields and ("emission_scale" in fields), spec.name


def test_a_checkpoint_from_another_config_is_refused_with_the_difference(tiny_run, tmp_path, data_dirs, capsys):
    from experiments.run import main
    copy = copy_run(tiny_run, tmp_path / "edited")
    config = json.loads((copy / "config.json").read_text())
    config["model"]["z_dim"] = 5
    config["stage1"]["steps"] = 9   # unfinished, so the checkpoint is loaded
    (copy / "config.json").write_text(json.dumps(config))
    assert main(["--dataset", "sprites", "--sprites-layers", str(data_dirs.sprites), "--resume", str(copy),
                 "--no-progress", "--num-workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "z_dim" in err and "checkpoint: z_dim=4" in err and len(err.strip().splitlines()) == 1


def _config_of(argv):
    from experiments.run import build_parser, check_flags, given_flags, prepare
    args = build_parser().parse_args(argv)
    args.given = given_flags(args)
    check_flags(args, args.given)
    return prepare(args, torch.device("cpu"))[1]


def test_boolean_model_flags_override_the_preset_both_ways():
    for flag, want in (("--identity-film", True), ("--no-identity-film", False)):
        assert _config_of(["--dataset", "sprites", flag])["model"]["identity_film"] is want
    for flag, want in (("--last-frame-skip", True), ("--no-last-frame-skip", False)):
        assert _config_of(["--dataset", "smmnist", "--model", "svg-lp", flag])["model"]["last_frame_skip"] is want


def test_learned_priors_are_fitted_in_their_stage_and_loaded_with_the_run(tmp_path, data_dirs):
    """The identity prior's mean is fitted in stage 1 and frozen in stage 2; the dynamics prior in stage 2."""
    out = tmp_path / "loc"
    flags = tiny_run_flags(steps=None)
    code, _, err = run_cli("--dataset", "sprites", "--sprites-layers", data_dirs.sprites, "--out", out,
                           "--stage1-steps", 20, "--stage2-steps", 5, "--learned-identity-loc", "--identity-film",
                           "--learned-dynamics-prior", "--guide-pose-input", 0.5, *flags)
    assert code == 0, err
    stage1 = torch.load(out / "checkpoints" / "stage1.pt", weights_only=True)["model"]
    stage2 = torch.load(out / "checkpoints" / "stage2.pt", weights_only=True)["model"]
    assert stage1["identity_loc"].abs().max() > 1e-3  # moved from the reference's 0
    assert torch.equal(stage1["identity_loc"], stage2["identity_loc"])  # frozen with the decoder
    assert "dynamics_loc" not in stage1 and stage2["dynamics_loc"].abs().max() > 1e-3
    vdsm = VDSM.load(out)
    assert torch.equal(vdsm.model2.static_prior(2, torch.zeros(1)).mean, stage1["identity_loc"].expand(2, -1))
    prior = vdsm.model2.dynamics_prior(2, torch.zeros(1))
    assert torch.equal(prior.mean, stage2["dynamics_loc"].expand(2, -1))
    assert torch.equal(prior.base_dist.scale, stage2["dynamics_log_scale"].exp().expand(2, -1))


NETWORK_SIZES = {"z_dim", "encoder_widths", "encoder_features", "decoder_widths", "dynamics_dim", "trans_dim",
                 "rnn_dim", "rnn_layers", "rnn_dropout"}


@pytest.mark.parametrize("dataset", ["sprites", "smmnist", "mug", "pendulum"])
def test_every_model_departure_of_a_cpu_preset_is_named_in_its_departures(dataset):
    from experiments.configs import load_preset
    from models.registry import get

    complete_model_config = get("vdsm").complete_model

    cpu, paper = load_preset(dataset, "cpu"), load_preset(dataset, "paper")
    departs = " ".join(cpu.get("departs_from_paper", []))
    cpu_model, paper_model = complete_model_config(cpu["model"]), complete_model_config(paper["model"])
    for name, value in cpu_model.items():
        if value == paper_model[name]:
            continue
        if name in NETWORK_SIZES:
            assert "networks:" in departs, (dataset, name)
        else:
            assert name in departs, (dataset, name, value)


def test_what_the_command_line_changed_in_the_preset_is_recorded_beside_its_departures():
    config = _config_of(["--dataset", "smmnist", "--model", "srvp", "--steps", "1400", "--lr", "0.001"])
    assert config["changed_from_preset"] == {"train.steps": {"preset": 4400, "run": 1400},
                                             "train.lr": {"preset": 0.002, "run": 0.001}}
    assert "changed_from_preset" not in _config_of(["--dataset", "smmnist", "--model", "srvp"])


@pytest.mark.parametrize("model", ["dsa", "cdsvae", "dbse", "spyl"])
def test_identity_kl_weights_the_identity_site_in_model_and_guide_and_nothing_else(model):
    from models import registry
    preset = _config_of(["--dataset", "sprites", "--model", model])["train"]["identity_kl"]
    config = _config_of(["--dataset", "sprites", "--model", model, "--identity-kl", "3"])
    assert config["train"]["identity_kl"] == 3.0
    assert config["changed_from_preset"]["train.identity_kl"] == {"preset": preset, "run": 3.0}
    run = registry.get(model).run_cls.from_config(config)
    x = torch.rand(2, 3, 3, 64, 64)
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(run.guide).get_trace(x, factors=run.factors())
    trace = poutine.trace(poutine.replay(run.model, guide_trace)).get_trace(x, factors=run.factors())
    for t in (guide_trace, trace):
        assert t.nodes["identity"]["scale"] == 3.0
        assert all(t.nodes[f"z_{i}"]["scale"] == 1.0 for i in (1, 2, 3))


def test_identity_kl_is_refused_below_zero_and_for_models_without_its_weight(tmp_path):
    code, _, err = run_main("run", ["--dataset", "sprites", "--model", "dbse", "--identity-kl", "-1",
                                    "--out", tmp_path / "a"])
    assert code == 2 and "--identity-kl=-1.0 must be at least 0" in err and not (tmp_path / "a").exists()
    code, _, err = run_main("run", ["--dataset", "sprites", "--model", "vdsm", "--identity-kl", "2",
                                    "--out", tmp_path / "b"])
    assert code == 2 and "--identity-kl only applies to" in err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("command", ["evaluate", "damage", "export_videos", "fit_prior", "judge", "bench"])
def test_every_flag_of_the_other_commands_has_a_help_line(command):
    import importlib
    parser = importlib.import_module(f"experiments.{command}").build_parser()
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert not silent, command


@pytest.mark.parametrize("command", ["run", "evaluate", "damage", "export_videos", "fit_prior", "judge", "bench"])
def test_a_malformed_command_line_is_answered_in_a_short_usage_and_one_error_line(command, capsys):
    import importlib
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(f"experiments.{command}").build_parser().parse_args(["--no-such-flag"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err[-1].startswith(f"python -m experiments.{command}: error: ")
    assert len(err) <= 3 and err[0].startswith(f"usage: python -m experiments.{command} "), err  # not every flag
