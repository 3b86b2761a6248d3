import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.configs import load_preset
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
                             max_test=200, sprites_layers=data_dirs.sprites, seq_len=8)
    chance = {"action": 1 / 9, "body": 1 / 6, "bottom": 1 / 6, "top": 1 / 6, "hair": 1 / 6}
    assert set(acc) == set(chance)
    for head, value in acc.items():
        assert value > 0.8, (head, acc)  # on unseen characters, far above chance


def test_evaluate_cli_on_a_tiny_run(tmp_path, data_dirs):
    from tests_helpers import tiny_run_flags
    run = tmp_path / "tiny"
    env_root = tmp_path / "root"
    cmd = [sys.executable, "-m", "experiments.run", "--dataset", "sprites", "--sprites-layers", str(data_dirs.sprites),
           "--out", str(run), *tiny_run_flags()]
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    result = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--run", str(run), "--sprites-layers",
                             str(data_dirs.sprites), "--judge-steps", "3", "--batch-size", "6", "--repeats", "2",
                             "--data-root", str(env_root)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    protocol = json.loads((run / "metrics.json").read_text())["judge_protocol"]
    assert protocol["repeats"] == 2 and protocol["batch_size"] == 6
    assert set(protocol["fix_identity"]) == {"body", "bottom", "top", "hair"}
    assert 0 <= protocol["fix_dynamics"]["accuracy"]["mean"] <= 1
    assert 1 <= protocol["fix_dynamics"]["IS"]["mean"] <= 9
    table = (run / "disentanglement.md").read_text()
    assert "| Method | Acc | IS |" in table and "99.53%" in table
    assert list((env_root / "judges").glob("sprites-*.pt"))  # cached for the next evaluation
    bad = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--run", str(tmp_path / "none")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_judge_command_trains_once_then_loads_from_the_cache(tmp_path, data_dirs):
    from experiments.judge import main
    args = ["--dataset", "sprites", "--steps", "2", "--sprites-layers", str(data_dirs.sprites), "--data-root",
            str(tmp_path)]
    assert main(args) == 0
    cached = list((tmp_path / "judges").glob("sprites-*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert main(args) == 0 and cached[0].stat().st_mtime_ns == stamp
    # experiments.evaluate asks for the judge of the run's stage-2 sequence length: the same cache entry
    seq_len = load_preset("sprites", "cpu")["stage2"]["seq_len"]
    load_or_train_judge("sprites", root=tmp_path, steps=2, seq_len=seq_len, sprites_layers=data_dirs.sprites)
    assert list((tmp_path / "judges").glob("sprites-*.pt")) == cached and cached[0].stat().st_mtime_ns == stamp
    assert main(["--dataset", "kth"]) == 2
