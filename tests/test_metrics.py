import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.configs import load_preset
from tests_helpers import copy_run, run_main, tiny_run_flags
from vdsm.metrics import accuracy, entropy_of_mean, inception_score, mean_entropy, prediction_summary
from vdsm.metrics.judge import Judge, load_or_train_judge, train_judge

REPO = Path(__file__).resolve().parents[1]


def test_confident_and_diverse_predictions():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert mean_entropy(probs) == pytest.approx(0, abs=1e-6)
    assert entropy_of_mean(probs) == pytest.approx(math.log(2))
    assert inception_score(probs) == pytest.approx(2.0, rel=1e-5)


def test_uniform_predictions():
    probs = torch.full((5, 9), 1 / 9)
    assert mean_entropy(probs) == pytest.approx(math.log(9))
    assert entropy_of_mean(probs) == pytest.approx(math.log(9))
    assert inception_score(probs) == pytest.approx(1.0)


def test_identical_predictions_never_score_below_one():
    # with this seed the float32 mean of 7 equal rows is not exactly that row: the KL rounds below 0
    torch.manual_seed(6)
    probs = torch.softmax(torch.randn(1, 9), -1).expand(7, 9)
    assert inception_score(probs) >= 1.0


def test_hand_computed_mixture():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    p_y = torch.tensor([0.25, 0.25, 0.5])
    kl0 = 0.5 * math.log(0.5 / 0.25) * 2
    kl1 = math.log(1 / 0.5)
    assert inception_score(probs) == pytest.approx(math.exp((kl0 + kl1) / 2), rel=1e-5)
    assert mean_entropy(probs) == pytest.approx(math.log(2) / 2, rel=1e-5)
    assert entropy_of_mean(probs) == pytest.approx(-(p_y * p_y.log()).sum().item(), rel=1e-5)
    assert accuracy(probs, torch.tensor([1, 2])) == 0.5  # ties go to the first class
    assert set(prediction_summary(probs, torch.tensor([0, 2]))) == {"IS", "H(y|x)", "H(y)", "accuracy"}


def test_judge_shapes():
    logits = Judge(3, {"action": 9, "hair": 6})(torch.rand(2, 4, 3, 64, 64))
    assert logits["action"].shape == (2, 9) and logits["hair"].shape == (2, 6)


def test_judge_learns_sprites_labels_on_a_small_subset(data_dirs):
    judge, acc = train_judge("sprites", steps=150, batch_size=16, lr=3e-3, num_workers=0, max_train=1500,
                             max_test=200, sprites_layers=data_dirs.sprites, seq_len=8, score_on=("val", "test"))
    chance = {"action": 1 / 9, "body": 1 / 6, "bottom": 1 / 6, "top": 1 / 6, "hair": 1 / 6}
    assert set(acc) == {"val", "test"} and set(acc["test"]) == set(chance)
    assert judge.dynamic_heads == ["action"] and judge.static_heads == ["body", "bottom", "top", "hair"]
    for split in ("val", "test"):
        for head, value in acc[split].items():
            assert value > 0.8, (split, head, acc)  # on unseen characters, far above chance


def _evaluate(run, root, *extra):
    """``python -m experiments.evaluate`` in this process, small: (exit code, stdout, stderr)."""
    return run_main("evaluate", ["--run", run, "--judge-steps", "3", "--batch-size", "6", "--repeats", "2",
                                 "--data-root", root, *extra])


def test_evaluate_cli_on_a_tiny_run(vdsm_run, judge_root, tmp_path, data_dirs):
    run = copy_run(vdsm_run.path, tmp_path / "tiny")   # its stage-2 guide sees the poses (guide_pose_input 0.5)
    # the shell path once, as a user types it
    result = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--run", str(run), "--judge-steps", "3",
                             "--batch-size", "6", "--repeats", "2", "--data-root", str(judge_root),
                             "--sprites-layers", str(data_dirs.sprites)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "judge protocols on test sequences of sprites: 2 repeats x 6 sequences, stage 2 model" in result.stdout
    assert "judge protocols" in result.stderr  # the progress bar
    protocol = json.loads((run / "metrics.json").read_text())["judge_protocol"]
    assert (protocol["repeats"], protocol["batch_size"], protocol["split"], protocol["stage"]) == (2, 6, "test", 2)
    assert set(protocol["fix_identity"]["heads"]) == {"body", "bottom", "top", "hair"}
    assert set(protocol["fix_dynamics"]["heads"]) == {"action"} and protocol["fix_dynamics"]["protocol"]
    assert protocol["consistency"]["guide_inputs"] == "the reference guide's (no frame poses)"
    assert "consistency_with_pose_input" in protocol   # the run's guide sees poses: reported apart
    assert set(protocol["judge_accuracy"]) == {"action", "body", "bottom", "top", "hair"}  # on the test split
    table = (run / "disentanglement.md").read_text()
    assert "| head | Acc | IS |" in table and "99.53%" in table and "guide sees the frame poses" in table
    # the diversity of prior samples, the distance of their frames to real ones, reconstructions' accuracy
    assert set(protocol["fix_dynamics"]["prior_identity"]) == {"body", "bottom", "top", "hair"}
    assert set(protocol["fix_identity"]["prior_dynamics"]) == {"action"}
    assert protocol["fix_dynamics"]["frechet_judge"]["mean"] > 0 and "all_static" in protocol["fix_identity"]
    assert set(protocol["reconstruction"]) == {"what", "action", "body", "bottom", "top", "hair", "all"}
    assert "identities drawn from the prior" in table and "## Reconstructions" in table
    assert list((judge_root / "judges").glob("sprites-*.pt"))  # cached for the next evaluation
    code, _, err = _evaluate(run, judge_root, "--sprites-layers", data_dirs.sprites, "--split", "val")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["judge_protocol_val"]["split"] == "val" and metrics["judge_protocol"] == protocol
    assert "99.53%" not in (run / "disentanglement_val.md").read_text()  # published numbers beside test rows only
    code, _, err = run_main("evaluate", ["--run", tmp_path / "none"])
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    for flag in (["--samples", "3"], ["--batchnorm", "batch"]):
        code, _, err = _evaluate(run, judge_root, *flag)
        assert code == 2 and f"{flag[0]} applies to prediction runs" in err


def test_evaluate_flags_a_stage1_only_run_and_runs_the_pendulum_judge(tmp_path, data_dirs):
    """A stage-1 run's "fixed dynamics" keeps every pose: labelled, not passed off as the protocol.
    Pendulum: a judge without an action head (two dynamic heads, one static) on one-channel frames."""
    run = tmp_path / "pendulum"
    code, _, err = run_main("run", ["--dataset", "pendulum", "--out", run, "--stage", "1", "--seq-len", "8",
                                    *tiny_run_flags()])
    assert code == 0, err
    code, _, err = _evaluate(run, tmp_path / "root")
    assert code == 0, err
    protocol = json.loads((run / "metrics.json").read_text())["judge_protocol"]
    assert protocol["stage"] == 1 and protocol["fix_dynamics"]["protocol"] is False
    assert set(protocol["fix_dynamics"]["heads"]) == {"angle", "damping"}
    assert set(protocol["fix_identity"]["heads"]) == {"length"}
    assert "NOT the protocol" in (run / "disentanglement.md").read_text()


def test_judge_command_trains_once_then_loads_from_the_cache(tmp_path, data_dirs, capsys):
    from experiments.judge import main
    args = ["--dataset", "sprites", "--steps", "2", "--sprites-layers", str(data_dirs.sprites), "--data-root",
            str(tmp_path), "--no-progress"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["accuracy"]) == {"val", "test"} and printed["dynamic_heads"] == ["action"]
    cached = list((tmp_path / "judges").glob("sprites-*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert main(args) == 0 and cached[0].stat().st_mtime_ns == stamp
    # experiments.evaluate asks for the judge of the run's stage-2 sequence length: the same cache entry
    seq_len = load_preset("sprites", "cpu")["stage2"]["seq_len"]
    load_or_train_judge("sprites", root=tmp_path, steps=2, seq_len=seq_len, sprites_layers=data_dirs.sprites,
                        accuracy_on=("val", "test"))
    assert list((tmp_path / "judges").glob("sprites-*.pt")) == cached and cached[0].stat().st_mtime_ns == stamp
    assert main(["--dataset", "kth"]) == 2
    assert main(["--dataset", "sprites", "--mug", "/tmp/x.npz"]) == 2
