"""The fused BatchNorm + LeakyReLU layer (same values, statistics and gradients as the two
standard layers, with one saved tensor instead of two) and evaluation on batch statistics."""
import pytest
import torch
from torch import nn

from vdsm.nets.bn_act import BatchNormLeakyReLU


def pair(channels, weight_std=0.3, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    fused = BatchNormLeakyReLU(channels).to(dtype)
    with torch.no_grad():
        fused.weight.normal_(1, weight_std)
        fused.bias.normal_(0, 0.5)
    ref = nn.Sequential(nn.BatchNorm2d(channels), nn.LeakyReLU(0.2, inplace=True)).to(dtype)
    ref[0].load_state_dict(fused.state_dict())
    return fused, ref


@pytest.mark.parametrize("small_weight", [False, True])
def test_fused_layer_matches_batchnorm_then_leaky_relu(small_weight):
    fused, ref = pair(5)
    if small_weight:   # a weight near zero: the layer falls back to the standard computation
        with torch.no_grad():
            fused.weight[2] = ref[0].weight[2] = 1e-5
    for step in range(3):   # running statistics accumulate over steps
        x = 3 * torch.randn(4, 5, 6, 7, dtype=torch.float64) + 1
        g = torch.randn_like(x)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = fused(x1 * 1), ref(x2 * 1)
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        torch.testing.assert_close(y1, y2, rtol=0, atol=1e-12)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(fused.weight.grad, ref[0].weight.grad, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(fused.bias.grad, ref[0].bias.grad, rtol=1e-9, atol=1e-10)
        for name, value in ref[0].state_dict().items():
            torch.testing.assert_close(fused.state_dict()[name], value, rtol=0, atol=1e-12)
    fused.eval(), ref.eval()
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(fused(x), ref(x), rtol=0, atol=1e-12)


def saved_bytes(layers, x):
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layers(x).sum()
    return sum(total)


def test_fused_block_saves_half_the_activations():
    fused, ref = pair(16, dtype=torch.float32)
    conv = nn.Conv2d(3, 16, 3, padding=1)
    x = torch.randn(8, 3, 32, 32)
    activation = 8 * 16 * 32 * 32 * 4
    plain, saving = saved_bytes(nn.Sequential(conv, ref), x), saved_bytes(nn.Sequential(conv, fused), x)
    assert plain - saving >= activation and saving < 0.6 * plain


def test_batch_statistics_normalises_each_call_by_its_own_batch_and_leaves_the_buffers():
    from vdsm.nets import batch_statistics

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), BatchNormLeakyReLU(3)).eval()
    for bn in (net[1], net[2]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 2, 4, 4) * 3 + 1
    with torch.no_grad():
        on_running = net(x)
        with batch_statistics(net) as layers:
            on_batch = net(x)
        after = net(x)
    assert len(layers) == 2 and not any(m.training for m in net.modules())
    assert all(torch.equal(v, buffers[k]) for k, v in net.state_dict().items())  # running stats untouched
    assert torch.equal(after, on_running) and not torch.allclose(on_batch, on_running, atol=1e-3)
    copy = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), BatchNormLeakyReLU(3))  # training updates buffers
    copy.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.allclose(copy.train()(x), on_batch, atol=1e-6)  # training mode: the batch's statistics
