"""The judge protocols (docs/papers.md, "Evaluation protocols") on a trained model, batched and repeated.

The judge's heads come in two groups (``vdsm.metrics.judge.JudgeSpec``): dynamic heads (the
motion, e.g. Sprites' action) and static heads (the appearance, e.g. hair colour). Each
protocol runs the part its judge has heads for and says so when it skips the rest.

* ``fix_dynamics``: the dynamics of a real sequence kept (posterior mean), identity from the
  prior; the dynamic heads score accuracy against the real sequence's labels, IS, H(y|x), H(y).
  The static heads score the diversity and confidence of the prior's identities
  (``prior_identity``: IS, H(y|x), H(y); no accuracy, since a new identity has no label).
* ``fix_identity``: the identity kept, dynamics from the prior; the static heads score the same,
  ``all_static`` the share with every static head right at once, and ``prior_dynamics`` the
  dynamic heads' diversity (e.g. action H(y): do prior dynamics give every action?).
* Both generated sets also get ``frechet_judge``: the Frechet distance between their frames and
  the real batch's frames in the judge's frame features (an independent network, unlike the
  run's own encoder), when the judge has ``frame_features``. It is computed per batch (128 x T
  frames by default) and so is biased upwards by the batch size: compare at equal sizes only.
* Pooled entropies: each head's numbers above are per batch of ``batch_size`` (the mean and std
  over the repeats); the plug-in H(y) of 128 draws is biased low by about (k - 1) / 2n and IS with
  it. ``pooled`` gives IS, H(y|x), H(y) (and accuracy) over the predictions of every repeat at once,
  and ``class_balanced`` the same on the subset the C-DSVAE and DBSE test scripts report: for each
  true class of the head, its first m predictions, m the smallest class count (heads with labels).
* ``reconstruction``: the judge's accuracy against the labels on reconstructions (the reference
  guide's inputs), per head and with every head right at once (``all``).
* ``consistency`` (VDSM's own "accuracy consistency", not comparable with the above):
  agreement of the judge on real sequences and on their reconstructions, with the reference
  guide's inputs (``model.reference_guide_inputs()``; for VDSM with ``--guide-pose-input`` the
  stage-2 guide otherwise also sees the frame poses), so that it stands beside the paper's
  number; with pose input it is reported separately (``consistency_with_pose_input``).
* ``transfer``: dynamics of A, identity of B; share of sequences whose dynamic heads read A's
  labels, whose static heads read B's, and both.
* ``per_class``: each dynamic head's accuracy per true class (right / of, summed over the repeats)
  in ``fix_dynamics``, ``reconstruction`` and ``transfer``: a motion the model never draws (e.g.
  one of Sprites' nine actions) shows as one class near 0% where the mean loses only 1/9; with the
  ``confusion`` matrix (rows: true class, columns: predicted) and, for a head whose classes combine
  factors (``judge.head_parts``, e.g. Sprites' action = motion x direction), each factor's accuracy
  (``parts``): which of them a model loses.

A model is what ``models.spec.StaticLatentRun`` declares: ``fix_dynamics``, ``fix_identity``,
``reconstruct`` and ``transfer_action`` taking frames [B, T, C, H, W]; ``fitted_priors``, the latents
drawn from priors fitted after training (that departure from the protocol is labelled in the result);
``has_dynamics_latent`` (False for VDSM trained in stage 1 only: its "fixed dynamics" keeps every pose
of the real sequence, so its numbers are labelled as not the protocol); ``shows_poses`` and
``reference_guide_inputs()`` (a guide that sees more than the reference's, and a context where it
does not).
"""
import statistics

import torch
from tqdm.auto import tqdm

from .disentanglement import class_balanced, prediction_summary

__all__ = ["judge_protocol", "part_accuracy"]

_STAGE1 = "stage-1 model (no dynamics latent): "
WHAT = {
    "fix_dynamics": (
        "dynamics of a real sequence kept (posterior mean), identity drawn from the prior",
        _STAGE1 + "every pose of the real sequence kept, identity drawn from the prior; NOT the protocol"),
    "fix_identity": (
        "identity of a real sequence kept (posterior mean), dynamics drawn from the prior",
        _STAGE1 + "identity kept, poses drawn i.i.d. from N(0, I); NOT the protocol"),
    "transfer": (
        "dynamics of A, identity of B",
        _STAGE1 + "poses of A, identity of B (an identity swap)"),
}


def _mean_std(values):
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def _aggregate(rows):
    return {k: _mean_std([r[k] for r in rows]) for k in rows[0]}


def _all_right(probs, labels, heads):
    return torch.stack([probs[h].argmax(-1) == labels[h] for h in heads]).all(0).float().mean().item()


def _frechet(judge, generated, real):
    from .frechet import frechet_from_features

    return frechet_from_features(judge.frame_features(generated).cpu(), judge.frame_features(real).cpu())


def _count_per_class(counts, probs, labels):
    """Add right / total per true class of one batch to ``counts`` ({"right": [...], "of": [...]}), and
    the batch's (true, predicted) pairs to its ``confusion`` matrix (rows: true class)."""
    n = len(counts["of"])
    predicted = probs.argmax(-1)
    right = labels[predicted == labels]
    for key, present in (("of", labels), ("right", right)):
        counts[key] = [a + b for a, b in zip(counts[key], torch.bincount(present, minlength=n).tolist())]
    pairs = torch.bincount(labels * n + predicted, minlength=n * n).reshape(n, n).tolist()
    counts["confusion"] = [[a + b for a, b in zip(row, new)] for row, new in zip(counts["confusion"], pairs)]


def part_accuracy(confusion, parts):
    """Accuracy of each factor of a combined head from its confusion matrix (rows: true class): a
    prediction is right on a factor when its digit of the class number is the true one (``parts``:
    ((factor, classes), ...), first most significant; ``JudgeSpec.parts``)."""
    sizes = [n for _, n in parts]
    total = sum(map(sum, confusion))
    result = {}
    for k, (name, n) in enumerate(parts):
        below = 1
        for size in sizes[k + 1:]:
            below *= size
        right = sum(count for t, row in enumerate(confusion) for p, count in enumerate(row)
                    if (t // below) % n == (p // below) % n)
        result[name] = right / total if total else None
    return result


def _agreement(a, b, heads):
    return {k: (a[k].argmax(-1) == b[k].argmax(-1)).float().mean().item() for k in heads}


@torch.no_grad()
def judge_protocol(model, judge, dataset, *, batch_size=128, repeats=5, seed=0, device="cpu", progress=False,
                   metrics=None):
    """Every protocol that applies; each number is ``{"mean", "std"}`` over ``repeats`` batches.

    Each repeat draws ``batch_size`` sequences of ``dataset`` at random (seeded) and fresh prior
    samples. Sections without heads to score are ``{"skipped": why}``. ``metrics``: the label-free
    numbers of each head's predictions, {name: f(probs [N, classes]) -> float} (default
    ``JUDGE_METRICS``: IS, H(y|x), H(y)); accuracy is added where labels exist.
    """
    dynamic, static = list(judge.dynamic_heads), list(judge.static_heads)
    stage = 2 if model.has_dynamics_latent else 1
    pose_input = bool(model.shows_poses)
    generator = torch.Generator().manual_seed(seed)
    rows = {"fix_dynamics": {h: [] for h in dynamic}, "fix_identity": {h: [] for h in static}, "consistency": [],
            "consistency_with_pose_input": [], "transfer": [], "prior_identity": {h: [] for h in static},
            "prior_dynamics": {h: [] for h in dynamic}, "all_static": [], "reconstruction": [],
            "frechet_fix_dynamics": [], "frechet_fix_identity": []}
    per_class = {name: {h: {"right": [0] * judge.heads_spec[h], "of": [0] * judge.heads_spec[h],
                            "confusion": [[0] * judge.heads_spec[h] for _ in range(judge.heads_spec[h])]}
                        for h in dynamic}
                 for name in ("fix_dynamics", "reconstruction", "transfer")}
    frechet = hasattr(judge, "frame_features")
    pooled = {}   # (section, head) -> [(probs, labels or None)] over the repeats
    for _ in tqdm(range(repeats), desc="judge protocols", disable=not progress, dynamic_ncols=True):
        idx = torch.randperm(len(dataset), generator=generator)[: min(batch_size, len(dataset))]
        items = [dataset[int(i)] for i in idx]
        x = torch.stack([it[0] for it in items]).to(device)
        labels = {k: torch.tensor([it[1][k] for it in items], device=device) for k in judge.heads_spec}
        torch.manual_seed(int(torch.randint(2 ** 31, (), generator=generator)))
        for name, generate, heads, others, diversity in (
                ("fix_dynamics", model.fix_dynamics, dynamic, static, "prior_identity"),
                ("fix_identity", model.fix_identity, static, dynamic, "prior_dynamics")):
            if not heads:
                continue
            frames = generate(x)
            generated = judge.predict(frames)
            for head in heads:
                rows[name][head].append(prediction_summary(generated[head], labels[head], metrics))
                pooled.setdefault((name, head), []).append((generated[head].cpu(), labels[head].cpu()))
                if name in per_class:
                    _count_per_class(per_class[name][head], generated[head], labels[head])
            for head in others:
                rows[diversity][head].append(prediction_summary(generated[head], metrics=metrics))
                pooled.setdefault((diversity, head), []).append((generated[head].cpu(), None))
            if name == "fix_identity":
                rows["all_static"].append(_all_right(generated, labels, static))
            if frechet:
                rows["frechet_" + name].append(_frechet(judge, frames, x))
        real = judge.predict(x)
        with model.reference_guide_inputs():
            rebuilt = judge.predict(model.reconstruct(x))
        rows["consistency"].append(_agreement(real, rebuilt, judge.heads_spec))
        rows["reconstruction"].append({**{h: (rebuilt[h].argmax(-1) == labels[h]).float().mean().item()
                                          for h in judge.heads_spec},
                                       "all": _all_right(rebuilt, labels, judge.heads_spec)})
        for head in dynamic:
            _count_per_class(per_class["reconstruction"][head], rebuilt[head], labels[head])
        if pose_input:
            rows["consistency_with_pose_input"].append(_agreement(real, judge.predict(model.reconstruct(x)),
                                                                  judge.heads_spec))
        partner = torch.roll(torch.arange(len(x), device=device), 1)
        moved = judge.predict(model.transfer_action(x, x[partner]))
        for head in dynamic:
            _count_per_class(per_class["transfer"][head], moved[head], labels[head])
        row = {}
        ok_a = torch.stack([moved[h].argmax(-1) == labels[h] for h in dynamic]).all(0) if dynamic else None
        ok_b = torch.stack([moved[h].argmax(-1) == labels[h][partner] for h in static]).all(0) if static else None
        if ok_a is not None:
            row["dynamics_of_A"] = ok_a.float().mean().item()
        if ok_b is not None:
            row["identity_of_B"] = ok_b.float().mean().item()
        if ok_a is not None and ok_b is not None:
            row["both"] = (ok_a & ok_b).float().mean().item()
        rows["transfer"].append(row)

    def pooled_summary(name, head, balanced):
        probs = torch.cat([p for p, _ in pooled[(name, head)]])
        labels = None if pooled[(name, head)][0][1] is None else torch.cat([y for _, y in pooled[(name, head)]])
        if balanced:
            keep = class_balanced(probs, labels)
            return {**prediction_summary(probs[keep], labels[keep], metrics), "sequences": len(keep)}
        return {**prediction_summary(probs, labels, metrics), "sequences": len(probs)}

    def section(name, heads, others):
        if not heads:
            kind = "dynamic" if name == "fix_dynamics" else "static"
            return {"skipped": f"the judge has no {kind} head"}
        out = {"what": WHAT[name][stage == 1], "protocol": stage == 2,
               "heads": {h: _aggregate(rows[name][h]) for h in heads},
               "pooled": {h: pooled_summary(name, h, False) for h in heads},
               "class_balanced": {h: pooled_summary(name, h, True) for h in heads},
               "pooled_what": "pooled: every repeat's predictions at once; class_balanced: for each true class, "
                              "its first m of them, m the smallest class count (the C-DSVAE/DBSE test scripts)"}
        diversity = "prior_identity" if name == "fix_dynamics" else "prior_dynamics"
        if others:
            out[diversity] = {h: _aggregate(rows[diversity][h]) for h in others}
            out[diversity + "_pooled"] = {h: pooled_summary(diversity, h, False) for h in others}
        if name == "fix_identity":
            out["all_static"] = _mean_std(rows["all_static"])
        if rows["frechet_" + name]:
            out["frechet_judge"] = _mean_std(rows["frechet_" + name])
        return out

    fitted = list(model.fitted_priors)
    if fitted:   # labelled in the result: the published protocol draws from the trained prior
        result_note = {"fitted_priors": fitted,
                       "departure": f"prior samples draw {' and '.join(fitted)} from priors fitted after training "
                                    f"(vdsm.fitted_prior), not from the trained priors"}
    else:
        result_note = {}
    result = {**result_note, "stage": stage, "batch_size": int(min(batch_size, len(dataset))), "repeats": repeats,
              "dynamic_heads": dynamic, "static_heads": static,
              "fix_dynamics": section("fix_dynamics", dynamic, static),
              "fix_identity": section("fix_identity", static, dynamic),
              "reconstruction": {"what": "judge accuracy on reconstructions (the reference guide's inputs)",
                                 **_aggregate(rows["reconstruction"])},
              "consistency": {"what": "judge on real sequences vs on their reconstructions (VDSM's own metric)",
                              "guide_inputs": "the reference guide's (no frame poses)",
                              "heads": _aggregate(rows["consistency"])},
              "transfer": {"what": WHAT["transfer"][stage == 1], "protocol": stage == 2,
                           **_aggregate(rows["transfer"])}}
    if dynamic:
        parts = getattr(judge, "head_parts", {})
        for counts in per_class.values():
            for head, c in counts.items():
                if head in parts:
                    c["parts"] = part_accuracy(c["confusion"], parts[head])
        result["per_class"] = per_class
    if pose_input:
        result["consistency_with_pose_input"] = {
            "what": "as consistency, with the stage-2 guide also seeing the frame poses (--guide-pose-input)",
            "heads": _aggregate(rows["consistency_with_pose_input"])}
    return result
