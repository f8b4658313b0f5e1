import numpy as np
import pytest
import torch
from torch import nn

import structlin
from structlin import LowRank, StructuredLayer

from helpers import assert_compiled_matches_eager


def _random_layer(*args, **kwargs) -> LowRank:
    layer = LowRank(*args, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer


@pytest.mark.parametrize("in_features, out_features, rank", [(1, 1, 1), (7, 5, 2), (5, 9, 3), (8, 8, 12)])
def test_forward_matches_formula_and_to_dense(in_features, out_features, rank):
    layer = _random_layer(in_features, out_features, rank)
    x = torch.randn(2, 3, in_features, dtype=torch.float64)
    U, V, b = (t.detach().numpy() for t in (layer.U, layer.V, layer.bias))
    expected = np.einsum("or,ri,bsi->bso", U, V, x.numpy()) + b
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=0, atol=1e-12)
    dense = layer.to_dense()
    assert dense.shape == (out_features, in_features)
    torch.testing.assert_close(layer(x), x @ dense.T + layer.bias, rtol=0, atol=1e-12)


def test_gradcheck():
    layer = _random_layer(5, 4, 3)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in layer.named_parameters()}

    def f(x, U, V, bias):
        return torch.func.functional_call(layer, {"U": U, "V": V, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, params["U"], params["V"], params["bias"]))


def test_init_has_linear_scale():
    torch.manual_seed(0)
    layer = LowRank(512, 256, 64)
    dense = layer.to_dense()
    target = 1 / (3 * 512)  # variance of an nn.Linear(512, ·) weight entry
    assert abs(dense.var().item() / target - 1) < 0.1
    assert layer.bias.abs().max().item() <= 1 / 512**0.5


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_from_linear_is_the_truncated_svd(rank):
    torch.manual_seed(0)
    linear = nn.Linear(10, 6).double()
    layer = LowRank.from_linear(linear, rank=rank)
    assert (layer.rank, layer.U.dtype, layer.U.device) == (rank, torch.float64, linear.weight.device)
    u, s, vh = np.linalg.svd(linear.weight.detach().numpy(), full_matrices=False)
    best = (u[:, :rank] * s[:rank]) @ vh[:rank]
    np.testing.assert_allclose(layer.to_dense().numpy(), best, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.bias, linear.bias, rtol=0, atol=0)
    # Eckart–Young: the error is the norm of the dropped singular values
    error = np.linalg.norm(layer.to_dense().numpy() - linear.weight.detach().numpy())
    np.testing.assert_allclose(error, np.sqrt((s[rank:] ** 2).sum()), rtol=1e-9, atol=1e-12)
    assert LowRank.exact_from_linear is False


def test_from_linear_keeps_dtype_and_checks_rank():
    linear = nn.Linear(4, 3, bias=False)
    layer = LowRank.from_linear(linear, rank=2)
    assert layer.U.dtype == torch.float32 and layer.bias is None
    with pytest.raises(ValueError, match="at most min"):
        LowRank.from_linear(linear, rank=4)
    with pytest.raises(ValueError, match="needs rank"):
        LowRank.from_linear(linear)
    with pytest.raises(TypeError, match="expects an nn.Linear"):
        LowRank.from_linear(nn.Conv1d(3, 3, 1), rank=1)


def test_create_by_name_and_errors():
    layer = StructuredLayer.create("lowrank", 6, 4, rank=2)
    assert isinstance(layer, LowRank) and layer.rank == 2
    assert "lowrank" in structlin.available_layers()
    for bad in (0, 2.5, None, True):
        with pytest.raises(ValueError, match="rank must be a positive int"):
            LowRank(4, 4, bad)
    layer = LowRank(8, 4, 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        layer(torch.randn(2, 7))
    with pytest.raises(TypeError, match="float32 inputs"):
        layer(torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 8, dtype=torch.long))


def test_cost_matches_parameters_flop_counter_and_saved_bytes():
    from torch.utils.flop_counter import FlopCounterMode

    layer = LowRank(64, 48, 8)
    x = torch.randn(16, 64, requires_grad=True)
    cost = layer.cost((16,))
    assert cost.params == sum(p.numel() for p in layer.parameters())
    with FlopCounterMode(display=False) as counter:
        layer(x).sum().backward()
    matmuls = 2 * 16 * 8 * (64 + 48)
    assert counter.get_total_flops() == 3 * matmuls  # forward, and two matmuls per layer in backward
    # the bias add is one op per output; its gradient sums 16 rows of output gradients: 15 adds per output
    assert cost.forward_flops == matmuls + 16 * 48 and cost.backward_flops == 2 * matmuls + 15 * 48
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        layer(x)
    assert sum(t.numel() * t.element_size() for t in saved if t.shape[0] == 16) == cost.saved_bytes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    layer = LowRank(16, 8, 4)
    x = torch.randn(3, 16).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, layer(x.float()).to(dtype), rtol=0, atol=0)


def test_state_dict_round_trip_and_batch_shapes():
    a, b = LowRank(6, 5, 2), LowRank(6, 5, 2)
    x = torch.randn(3, 6)
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))
    assert a(torch.randn(0, 6)).shape == (0, 5)
    assert a(torch.randn(6)).shape == (5,)
    assert "rank=2" in repr(a)


@pytest.mark.slow
def test_compiled_matches_eager():
    layer = _random_layer(12, 7, 3)
    assert_compiled_matches_eager(layer, torch.randn(5, 12, dtype=torch.float64, requires_grad=True))


def test_on_device(device):
    layer = _random_layer(12, 10, 4)
    moved = _random_layer(12, 10, 4).to(device)
    moved.load_state_dict(layer.state_dict())
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(moved(x.to(device)).cpu(), layer(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64, torch.bool])
def test_unsupported_dtypes_are_refused_at_construction(dtype):
    with pytest.raises(TypeError, match="LowRank supports the dtypes float16, bfloat16, float32, float64"):
        LowRank(6, 5, 2, dtype=dtype)
