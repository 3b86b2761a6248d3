"""The judge protocols against a scripted stand-in model and an oracle judge.

Frames carry their labels in pixels (one channel per head, the class index as brightness), the
oracle judge reads them back, and stand-in models keep or scramble them exactly as a model that
does or does not disentangle would: the protocol must score 1 for what is kept and chance for
what is not, for any split of heads into dynamic and static ones.
"""
import contextlib
import math

import pytest
import torch

from vdsm.metrics.judge import JUDGES
from vdsm.metrics.protocol import judge_protocol, part_accuracy


class OracleJudge:
    """Reads each head's class from its channel: pixel value = (class + 0.5) / classes."""

    def __init__(self, dynamic, static, parts=None):
        self.heads_spec = {**dynamic, **static}
        self.dynamic_heads, self.static_heads = list(dynamic), list(static)
        self.head_parts = dict(parts or {})

    def predict(self, x):
        out = {}
        for c, (head, n) in enumerate(self.heads_spec.items()):
            cls = (x[:, :, c].mean((1, 2, 3)) * n).long().clamp(0, n - 1)
            out[head] = torch.nn.functional.one_hot(cls, n).float()
        return out

    def frame_features(self, x):
        return x.mean((-2, -1)).reshape(-1, x.shape[2])   # [N * T, heads]: each frame's channel means


def encode(labels, heads, t=3, size=4):
    """Frames [B, T, heads, size, size] that carry ``labels`` (dict head -> [B])."""
    b = len(next(iter(labels.values())))
    x = torch.zeros(b, t, len(heads), size, size)
    for c, (head, n) in enumerate(heads.items()):
        x[:, :, c] = ((labels[head].float() + 0.5) / n)[:, None, None, None]
    return x


def decode(x, heads):
    return {head: (x[:, :, c].mean((1, 2, 3)) * n).long() for c, (head, n) in enumerate(heads.items())}


class StandIn:
    """A scripted model. ``disentangles=True``: fixing the dynamics keeps the dynamic labels and draws
    the static ones afresh (uniformly, as a prior would), and so on. ``disentangles=False``: the
    latents are swapped (the "dynamics" latent holds the appearance), so each protocol keeps the
    wrong half."""

    fitted_priors = ()

    def __init__(self, judge, disentangles=True, has_stage2=True, shows_poses=False, one_identity=False):
        self.judge, self.ok, self.has_dynamics_latent, self.shows_poses = judge, disentangles, has_stage2, shows_poses
        self.reference_inputs = False
        self.one_identity = one_identity   # a collapsed identity prior: every draw is the same character

    def _mix(self, x, keep, collapsed=False):
        heads = self.judge.heads_spec
        labels = decode(x, heads)
        for head, n in heads.items():
            if head not in keep:
                labels[head] = torch.zeros_like(labels[head]) if collapsed else torch.randint(n, labels[head].shape)
        return encode(labels, heads, x.shape[1], x.shape[-1])

    def fix_dynamics(self, x):
        return self._mix(x, self.judge.dynamic_heads if self.ok else self.judge.static_heads, self.one_identity)

    def fix_identity(self, x):
        return self._mix(x, self.judge.static_heads if self.ok else self.judge.dynamic_heads)

    def reconstruct(self, x):
        # with the reference guide's inputs this stand-in loses its dynamic labels
        return self._mix(x, self.judge.static_heads) if self.reference_inputs else x

    @contextlib.contextmanager
    def reference_guide_inputs(self):
        self.reference_inputs = True
        yield
        self.reference_inputs = False

    def transfer_action(self, a, b):
        la, lb = decode(a, self.judge.heads_spec), decode(b, self.judge.heads_spec)
        dynamic_from, static_from = (la, lb) if self.ok else (lb, la)
        labels = {h: (dynamic_from if h in self.judge.dynamic_heads else static_from)[h] for h in self.judge.heads_spec}
        return encode(labels, self.judge.heads_spec, a.shape[1], a.shape[-1])


def dataset(judge, n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = {h: torch.randint(k, (n,), generator=g) for h, k in judge.heads_spec.items()}
    x = encode(labels, judge.heads_spec)
    return [(x[i], {h: int(labels[h][i]) for h in labels}) for i in range(n)]


SPRITES = JUDGES["sprites"]


def test_a_disentangling_model_keeps_what_each_protocol_fixes():
    judge = OracleJudge(SPRITES.dynamic, SPRITES.static)
    r = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=128, repeats=3)
    action = r["fix_dynamics"]["heads"]["action"]
    assert action["accuracy"]["mean"] == 1.0 and action["H(y|x)"]["mean"] == pytest.approx(0, abs=1e-6)
    assert action["IS"]["mean"] > 7.5 and action["H(y)"]["mean"] > math.log(9) - 0.1   # 9 balanced classes
    for head in SPRITES.static:
        assert r["fix_identity"]["heads"][head]["accuracy"]["mean"] == 1.0
    assert r["transfer"]["dynamics_of_A"]["mean"] == r["transfer"]["identity_of_B"]["mean"] == 1.0
    assert r["stage"] == 2 and r["fix_dynamics"]["protocol"] and r["transfer"]["protocol"]


def test_prior_samples_are_scored_for_diversity_confidence_and_distance_to_real_frames():
    judge = OracleJudge(SPRITES.dynamic, SPRITES.static)
    good = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=128, repeats=3)
    collapsed = judge_protocol(StandIn(judge, one_identity=True), judge, dataset(judge), batch_size=128, repeats=3)
    for head in SPRITES.static:   # identities from the prior: diverse and confident, or one character
        r, c = good["fix_dynamics"]["prior_identity"][head], collapsed["fix_dynamics"]["prior_identity"][head]
        assert "accuracy" not in r and r["H(y|x)"]["mean"] == pytest.approx(0, abs=1e-6)
        assert r["H(y)"]["mean"] > math.log(6) - 0.1 and c["H(y)"]["mean"] == pytest.approx(0, abs=1e-6)
    assert good["fix_identity"]["prior_dynamics"]["action"]["H(y)"]["mean"] > math.log(9) - 0.1
    assert good["fix_identity"]["all_static"]["mean"] == 1.0
    assert collapsed["fix_dynamics"]["frechet_judge"]["mean"] > 10 * good["fix_dynamics"]["frechet_judge"]["mean"]
    # reconstructions, scored against the labels with the reference guide's inputs (this stand-in
    # then loses the action): each head, and every head at once
    rec = good["reconstruction"]
    assert rec["hair"]["mean"] == 1.0 and rec["action"]["mean"] < 0.3 and rec["all"]["mean"] < 0.3
    bad = judge_protocol(StandIn(judge, disentangles=False), judge, dataset(judge), batch_size=128, repeats=3)
    assert abs(bad["fix_identity"]["all_static"]["mean"] - 6 ** -4) < 0.02


def test_the_judge_protocol_takes_its_numbers_as_functions():
    """The label-free numbers are a dict of functions of the predictions: another one is scored in every
    section (per batch, pooled, class-balanced), accuracy stays where labels exist."""
    from vdsm.metrics.disentanglement import JUDGE_METRICS

    judge = OracleJudge(SPRITES.dynamic, SPRITES.static)
    top_share = {"top_share": lambda probs: probs.max(-1).values.mean().item()}
    r = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=32, repeats=1, metrics=top_share)
    head = r["fix_dynamics"]["heads"]["action"]
    assert set(head) == {"top_share", "accuracy"} and head["top_share"]["mean"] == pytest.approx(1.0)
    assert set(r["fix_dynamics"]["class_balanced"]["action"]) == {"top_share", "accuracy", "sequences"}
    assert set(r["fix_dynamics"]["prior_identity"]["hair"]) == {"top_share"}
    default = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=32, repeats=1)
    assert set(default["fix_dynamics"]["heads"]["action"]) == {*JUDGE_METRICS, "accuracy"}


def test_priors_fitted_after_training_are_labelled_as_a_departure():
    judge = OracleJudge(SPRITES.dynamic, SPRITES.static)
    plain = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=32, repeats=1)
    fitted = StandIn(judge)
    fitted.fitted_priors = ["identity", "dynamics"]
    labelled = judge_protocol(fitted, judge, dataset(judge), batch_size=32, repeats=1)
    assert "departure" not in plain and labelled["fitted_priors"] == ["identity", "dynamics"]
    assert "identity and dynamics from priors fitted after training" in labelled["departure"]


def test_a_model_with_swapped_latents_scores_chance():
    judge = OracleJudge(SPRITES.dynamic, SPRITES.static)
    r = judge_protocol(StandIn(judge, disentangles=False), judge, dataset(judge), batch_size=128, repeats=3)
    assert abs(r["fix_dynamics"]["heads"]["action"]["accuracy"]["mean"] - 1 / 9) < 0.06
    for head in SPRITES.static:
        assert abs(r["fix_identity"]["heads"][head]["accuracy"]["mean"] - 1 / 6) < 0.07
    assert r["transfer"]["dynamics_of_A"]["mean"] < 0.25 and r["transfer"]["identity_of_B"]["mean"] < 0.05
    assert r["transfer"]["both"]["mean"] < 0.05


def test_a_judge_with_one_dynamic_head_and_no_static_head():
    """MUG: the judge has only an action head."""
    judge = OracleJudge(JUDGES["mug"].dynamic, JUDGES["mug"].static)
    r = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=64, repeats=2)
    assert r["fix_dynamics"]["heads"]["action"]["accuracy"]["mean"] == 1.0
    assert r["fix_identity"] == {"skipped": "the judge has no static head"}
    assert set(r["transfer"]) >= {"dynamics_of_A"} and "identity_of_B" not in r["transfer"]
    assert set(r["consistency"]["heads"]) == {"action"}


def test_a_judge_without_an_action_head():
    """Pendulum: two dynamic heads (start angle, damping), one static (rod length)."""
    spec = JUDGES["pendulum"]
    judge = OracleJudge(spec.dynamic, spec.static)
    good = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=128, repeats=2)
    bad = judge_protocol(StandIn(judge, disentangles=False), judge, dataset(judge), batch_size=128, repeats=2)
    assert set(good["fix_dynamics"]["heads"]) == {"angle", "damping"}
    assert all(h["accuracy"]["mean"] == 1.0 for h in good["fix_dynamics"]["heads"].values())
    assert good["fix_identity"]["heads"]["length"]["accuracy"]["mean"] == 1.0
    assert abs(bad["fix_dynamics"]["heads"]["angle"]["accuracy"]["mean"] - 1 / 4) < 0.08
    assert abs(bad["fix_identity"]["heads"]["length"]["accuracy"]["mean"] - 1 / 3) < 0.1
    judge = OracleJudge({}, {"length": 3})
    r = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=32, repeats=1)
    assert r["fix_dynamics"] == {"skipped": "the judge has no dynamic head"} and "dynamics_of_A" not in r["transfer"]


def test_a_stage1_model_is_labelled_not_the_protocol():
    judge = OracleJudge(SPRITES.dynamic, SPRITES.static)
    r = judge_protocol(StandIn(judge, has_stage2=False), judge, dataset(judge), batch_size=32, repeats=1)
    assert r["stage"] == 1
    for name in ("fix_dynamics", "fix_identity", "transfer"):
        assert r[name]["protocol"] is False and "stage-1 model" in r[name]["what"]
    assert "NOT the protocol" in r["fix_dynamics"]["what"]


def test_consistency_uses_the_reference_guides_inputs_and_reports_pose_input_apart():
    judge = OracleJudge(SPRITES.dynamic, SPRITES.static)
    r = judge_protocol(StandIn(judge, shows_poses=True), judge, dataset(judge), batch_size=128, repeats=2)
    assert r["consistency"]["heads"]["action"]["mean"] < 0.3           # scored with the reference inputs
    assert r["consistency"]["heads"]["hair"]["mean"] == 1.0
    assert r["consistency_with_pose_input"]["heads"]["action"]["mean"] == 1.0
    plain = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=32, repeats=1)
    assert "consistency_with_pose_input" not in plain


class DropsOneAction(StandIn):
    """Draws action 7 as action 4 wherever it generates the motion (as a stage 2 that lost a class)."""

    def _relabel(self, x):
        labels = decode(x, self.judge.heads_spec)
        labels["action"] = torch.where(labels["action"] == 7, 4, labels["action"])
        return encode(labels, self.judge.heads_spec, x.shape[1], x.shape[-1])

    def fix_dynamics(self, x):
        return self._relabel(super().fix_dynamics(x))

    def reconstruct(self, x):
        return self._relabel(x)

    def transfer_action(self, a, b):
        return self._relabel(super().transfer_action(a, b))


def test_per_class_accuracy_shows_an_action_that_is_never_drawn():
    judge = OracleJudge(SPRITES.dynamic, SPRITES.static)
    r = judge_protocol(DropsOneAction(judge), judge, dataset(judge), batch_size=128, repeats=3)
    for name in ("fix_dynamics", "reconstruction", "transfer"):
        counts = r["per_class"][name]["action"]
        assert sum(counts["of"]) == 3 * 128
        assert counts["right"][7] == 0 and counts["of"][7] > 0
        assert all(r_ == n for c, (r_, n) in enumerate(zip(counts["right"], counts["of"])) if c != 7)
    assert "per_class" not in judge_protocol(StandIn(OracleJudge({}, SPRITES.static)), OracleJudge({}, SPRITES.static),
                                             dataset(OracleJudge({}, SPRITES.static)), batch_size=16, repeats=1)
    from experiments.evaluate import _per_class_table

    table = "\n".join(_per_class_table(r["per_class"]))
    assert "| transfer | 100 | 100 | 100 | 100 | 100 | 100 | 100 | 0 | 100 |" in table


class TurnsWithTheIdentity(StandIn):
    """Keeps the motion of the real sequence but turns it one direction on (Sprites' action = motion * 3 +
    direction) wherever the identity is drawn anew: as a model whose identity latent holds the direction."""

    def fix_dynamics(self, x):
        labels = decode(super().fix_dynamics(x), self.judge.heads_spec)
        motion, direction = labels["action"].div(3, rounding_mode="floor"), labels["action"] % 3
        labels["action"] = motion * 3 + (direction + 1) % 3
        return encode(labels, self.judge.heads_spec, x.shape[1], x.shape[-1])


def test_the_action_heads_factors_tell_a_lost_direction_from_a_lost_motion():
    judge = OracleJudge(SPRITES.dynamic, SPRITES.static, SPRITES.parts)
    r = judge_protocol(TurnsWithTheIdentity(judge), judge, dataset(judge), batch_size=64, repeats=2)
    assert r["fix_dynamics"]["heads"]["action"]["accuracy"]["mean"] == 0.0
    assert r["per_class"]["fix_dynamics"]["action"]["parts"] == {"action_type": 1.0, "direction": 0.0}
    assert r["per_class"]["transfer"]["action"]["parts"] == {"action_type": 1.0, "direction": 1.0}
    confusion = r["per_class"]["fix_dynamics"]["action"]["confusion"]
    assert sum(map(sum, confusion)) == 128 and all(row[t] == 0 for t, row in enumerate(confusion))
    assert [sum(row) for row in confusion] == r["per_class"]["fix_dynamics"]["action"]["of"]
    from experiments.evaluate import _per_class_table

    table = "\n".join(_per_class_table(r["per_class"]))
    assert "| dynamics kept, identity from the prior | 100.0 | 0.0 |" in table
    # three factors, the middle one lost: the mixed-radix digits are read in order
    sizes = (("a", 2), ("b", 3), ("c", 2))
    confusion = [[0] * 12 for _ in range(12)]
    for t in range(12):
        a, b, c = t // 6, (t // 2) % 3, t % 2
        confusion[t][a * 6 + ((b + 1) % 3) * 2 + c] = 5
    assert part_accuracy(confusion, sizes) == {"a": 1.0, "b": 0.0, "c": 1.0}


def test_pooled_entropies_remove_the_small_batch_bias_and_balance_classes_as_the_release():
    """H(y) of a batch of 16 draws of 9 balanced classes is biased low; pooled over the repeats it is
    near ln 9; the class-balanced subset keeps the first m of each true class, m the smallest count."""
    from vdsm.metrics.disentanglement import class_balanced

    judge = OracleJudge(SPRITES.dynamic, SPRITES.static)
    r = judge_protocol(StandIn(judge), judge, dataset(judge), batch_size=16, repeats=8)
    per_batch, pooled = r["fix_dynamics"]["heads"]["action"], r["fix_dynamics"]["pooled"]["action"]
    assert pooled["sequences"] == 128 and pooled["accuracy"] == 1.0
    assert per_batch["H(y)"]["mean"] < pooled["H(y)"] - 0.1 and pooled["H(y)"] > math.log(9) - 0.1
    balanced = r["fix_dynamics"]["class_balanced"]["action"]
    assert balanced["sequences"] % 9 == 0 and balanced["H(y)"] == pytest.approx(math.log(9), abs=1e-4)
    assert set(r["fix_dynamics"]["prior_identity_pooled"]) == set(SPRITES.static)
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    assert class_balanced(None, labels).tolist() == [1, 4, 3, 6, 0, 2]   # class 0 first two, then 1, then 2
