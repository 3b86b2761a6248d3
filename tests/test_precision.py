"""--amp: every model's ELBO under bf16 autocast stays fp32 and close to the fp32 one, on any CPU.

CI runs this file a second time under ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, where
oneDNN has no bf16 LSTM kernel (as on an AVX2-only laptop): the recurrent layers must then fall back
to fp32 instead of raising.
"""
import json
import math

import pyro
import pytest
import torch
import torch.nn as nn
from pyro import poutine
from pyro.infer import Trace_ELBO

from guides import SVGGuide, VDSMStage1Guide, VDSMStage2Guide
from guides.srvp import SRVPGuide
from models import SVGConfig, SVGModel, SVGNets, VDSMConfig, VDSMStage1Model, VDSMStage2Model
from models.dsa import DSAConfig
from models.srvp import SRVPConfig, SRVPModel, SRVPNets
from vdsm.annealing import Schedule
from models.dsa import DSARun as DSA
from vdsm.nets import LSTM, RNN
from vdsm.nets import recurrent

VDSM_TINY = VDSMConfig(nc=3, z_dim=6, n_experts=4, encoder_widths=(4, 4, 8, 8), encoder_features=16,
                       decoder_widths=(16, 8, 8, 4), dynamics_dim=5, trans_dim=8, rnn_dim=8, rnn_layers=2,
                       rnn_dropout=0.1)


def vdsm_pair(model_cls, guide_cls):
    model, guide = model_cls(VDSM_TINY), guide_cls(VDSM_TINY)
    return model, guide, Schedule().factors(0.3), torch.rand(2, 4, 3, 64, 64), model.parameters()


def svg_pair(learned_prior):
    nets = SVGNets(SVGConfig(nc=1, nf=4, g_dim=8, z_dim=3, rnn_dim=8, n_past=3, learned_prior=learned_prior))
    return SVGModel(nets), SVGGuide(nets), {"z": 1.0}, torch.rand(3, 6, 1, 64, 64), nets.parameters()


def srvp_pair():
    nets = SRVPNets(SRVPConfig(nf=4, nh=8, ny=3, z_dim=2, content_dim=6, nt_inf=2, n_past=2, rnn_dim=5, y_hidden=7,
                               mlp_hidden=9))
    return SRVPModel(nets), SRVPGuide(nets), {"z": 1.0}, torch.rand(2, 4, 1, 64, 64), nets.parameters()


def dsa_pair(posterior):
    api = DSA(DSAConfig(f_dim=4, z_dim=3, g_dim=8, nf=4, rnn_dim=8, posterior=posterior))
    return api.model, api.guide, api.factors(), torch.rand(2, 4, 3, 64, 64), api.model.parameters()


def cdsvae_pair():
    from models.cdsvae import CDSVAEConfig, CDSVAERun

    run = CDSVAERun(CDSVAEConfig(f_dim=4, z_dim=3, g_dim=8, nf=4, rnn_dim=8, mws_dataset_size=50))
    return run.model, run.guide, run.factors(), torch.rand(3, 4, 3, 64, 64), run.model.parameters()


def check_elbo_under_bf16_autocast(model, guide, x, factors, params):
    """--amp runs the networks in bf16: every site's log-prob and the ELBO must still be fp32, the
    ELBO within 2% of the fp32 one (same random numbers), and its gradients finite."""
    losses = []
    for amp in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            pyro.set_rng_seed(0)
            guide_trace = poutine.trace(guide).get_trace(x, factors=factors)
            trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, factors=factors)
            for t in (trace, guide_trace):
                t.compute_log_prob()
                for name, site in t.nodes.items():
                    if site["type"] == "sample" and name != "sequences":
                        assert site["log_prob"].dtype == torch.float32, name
            pyro.set_rng_seed(0)
            losses.append(Trace_ELBO().differentiable_loss(model, guide, x, factors=factors))
    assert losses[1].dtype == torch.float32
    assert abs(losses[1].item() - losses[0].item()) < 0.02 * abs(losses[0].item())
    losses[1].backward()
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)


PAIRS = {
    "vdsm-stage1": lambda: vdsm_pair(VDSMStage1Model, VDSMStage1Guide),
    "vdsm-stage2": lambda: vdsm_pair(VDSMStage2Model, VDSMStage2Guide),
    "svg-lp": lambda: svg_pair(True),
    "svg-fp": lambda: svg_pair(False),
    "srvp": srvp_pair,
    "dsa-full": lambda: dsa_pair("full"),
    "dsa-factorised": lambda: dsa_pair("factorised"),
    "cdsvae": cdsvae_pair,   # its factor sites (InfoNCE, the MI penalty) too
}


@pytest.mark.parametrize("name", PAIRS)
def test_bf16_autocast_keeps_every_log_prob_in_fp32(name):
    torch.manual_seed(0)
    model, guide, factors, x, params = PAIRS[name]()
    pyro.clear_param_store()
    check_elbo_under_bf16_autocast(model, guide, x, factors, params)


def plain_lstm_runs_under_bf16():
    lstm = nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.ones(2, 3, 4))
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def test_the_probe_tells_what_a_plain_lstm_does_and_draws_no_random_numbers():
    recurrent.low_precision_kernel_available.cache_clear()
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    available = recurrent.low_precision_kernel_available(nn.LSTM, "cpu", torch.bfloat16)
    assert torch.equal(torch.rand(3), expected)
    assert available == plain_lstm_runs_under_bf16()


@pytest.mark.parametrize("layer_cls", [LSTM, RNN])
@pytest.mark.parametrize("available", [True, False])
def test_recurrent_layers_fall_back_to_fp32_without_a_kernel(monkeypatch, layer_cls, available):
    """Whatever the machine, both branches run: with the probe saying no kernel, the layer gives fp32
    outputs (autocast off inside it) with gradients; with a kernel (real or claimed), what torch gives."""
    if available and layer_cls is LSTM and not plain_lstm_runs_under_bf16():
        available = False   # this machine has no bf16 LSTM: the True branch cannot run here
    monkeypatch.setattr(recurrent, "low_precision_kernel_available", lambda *_: available)
    torch.manual_seed(0)
    layer = layer_cls(4, 5, num_layers=2, batch_first=True)
    x = torch.randn(2, 3, 4, requires_grad=True)
    h0 = torch.zeros(2, 2, 5, dtype=torch.bfloat16)
    hx = (h0, h0) if layer_cls is LSTM else h0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x, hx)
    assert out.dtype == (torch.bfloat16 if available else torch.float32)
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # outside autocast the layer is the torch layer it extends, parameter names included
    reference = (nn.LSTM if layer_cls is LSTM else nn.RNN)(4, 5, num_layers=2, batch_first=True)
    reference.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x)[0], reference(x)[0])


def amp_runs(data_dirs):
    """``experiments.run --amp`` for each runner path: VDSM (both stages, ``run.py``) and SRVP
    (``run_svg.train_one_stage``, which SVG and DSA train through too)."""
    from test_srvp import SRVP_TINY
    from tests_helpers import tiny_run_flags

    sprites = ["--dataset", "sprites", "--sprites-layers", str(data_dirs.sprites)]
    return {"vdsm": [*sprites, *tiny_run_flags()],
            "srvp": ["--dataset", "smmnist", "--model", "srvp", "--mnist", str(data_dirs.mnist), "--steps", "2",
                     *SRVP_TINY]}


@pytest.mark.parametrize("model", ["vdsm", "srvp"])
def test_amp_trains_every_model_through_the_runner_on_this_cpu(model, data_dirs, tmp_path, monkeypatch):
    """The runner's --amp path end to end: training under bf16 autocast (the recurrent layers asked the
    probe, so autocast was on inside them), then the run's pictures and metrics as without --amp."""
    from tests_helpers import run_main

    asked = []
    probe = recurrent.low_precision_kernel_available
    monkeypatch.setattr(recurrent, "low_precision_kernel_available", lambda *a: asked.append(a) or probe(*a))
    out = tmp_path / model
    code, stdout, err = run_main("run", [*amp_runs(data_dirs)[model], "--data-root", tmp_path / "root", "--out", out,
                                         "--amp"])
    assert code == 0, err
    assert asked and all(a[1:] == ("cpu", torch.bfloat16) for a in asked)
    metrics = json.loads((out / "metrics.json").read_text())
    assert ", bf16 " in next(line for line in stdout.splitlines() if line.startswith("machine: "))
    assert metrics["machine"]["bf16_matmul_gflops"] > 0
    losses = [stats["final_loss_per_frame"] for stats in
              [metrics.get("stage1"), metrics.get("stage2"), metrics.get("train")] if stats]
    assert losses and all(math.isfinite(v) for v in losses)
