"""The judge protocols on a trained VDSM (REFERENCE section 5), batched and repeated.

* ``fix_dynamics``: dynamics of a real test sequence kept (posterior mean), identity from
  the prior; the judge's action head scores accuracy, IS, H(y|x), H(y).
* ``fix_identity``: identity kept, dynamics from the prior; accuracy and entropies of the
  attribute heads.
* ``consistency`` (VDSM's own "accuracy consistency", not comparable with the above):
  agreement of the judge on real test sequences and on their reconstructions.
* ``action_transfer``: dynamics of A, identity of B; share judged as A's action and B's
  attributes.
"""
import statistics

import torch

from .disentanglement import prediction_summary

__all__ = ["judge_protocol"]


def _mean_std(values):
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def _aggregate(rows):
    keys = rows[0].keys()
    return {k: _mean_std([r[k] for r in rows]) for k in keys}


@torch.no_grad()
def judge_protocol(vdsm, judge, test, *, batch_size=128, repeats=5, seed=0, action_heads=("action",), device="cpu"):
    """All four protocols; every entry is {metric: {"mean", "std"}} over ``repeats`` batches.

    Each repeat draws ``batch_size`` test sequences at random (seeded) and fresh prior samples.
    """
    attribute_heads = [k for k in judge.heads_spec if k not in action_heads]
    generator = torch.Generator().manual_seed(seed)
    results = {"fix_dynamics": [], "fix_identity": {k: [] for k in attribute_heads}, "consistency": [],
               "action_transfer": []}
    for _ in range(repeats):
        idx = torch.randperm(len(test), generator=generator)[: min(batch_size, len(test))]
        items = [test[int(i)] for i in idx]
        x = torch.stack([it[0] for it in items]).to(device)
        labels = {k: torch.tensor([it[1][k] for it in items], device=device) for k in judge.heads_spec}
        torch.manual_seed(int(torch.randint(2 ** 31, (), generator=generator)))
        for head in action_heads:
            probs = judge.predict(vdsm.fix_dynamics(x))[head]
            results["fix_dynamics"].append(prediction_summary(probs, labels[head]))
        generated = judge.predict(vdsm.fix_identity(x))
        for head in attribute_heads:
            results["fix_identity"][head].append(prediction_summary(generated[head], labels[head]))
        real, recon = judge.predict(x), judge.predict(vdsm.reconstruct(x))
        results["consistency"].append({k: (real[k].argmax(-1) == recon[k].argmax(-1)).float().mean().item()
                                       for k in judge.heads_spec})
        partner = torch.roll(torch.arange(len(x), device=device), 1)
        moved = judge.predict(vdsm.transfer_action(x, x[partner]))
        ok_action = torch.stack([moved[h].argmax(-1) == labels[h] for h in action_heads]).all(0)
        ok_attrs = torch.stack([moved[h].argmax(-1) == labels[h][partner] for h in attribute_heads]).all(0)
        results["action_transfer"].append({"action_of_A": ok_action.float().mean().item(),
                                           "attributes_of_B": ok_attrs.float().mean().item(),
                                           "both": (ok_action & ok_attrs).float().mean().item()})
    return {"fix_dynamics": _aggregate(results["fix_dynamics"]),
            "fix_identity": {k: _aggregate(v) for k, v in results["fix_identity"].items()},
            "consistency": _aggregate(results["consistency"]),
            "action_transfer": _aggregate(results["action_transfer"]),
            "batch_size": int(min(batch_size, len(test))), "repeats": repeats}
