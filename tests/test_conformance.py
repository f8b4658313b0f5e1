"""The contract every registered layer kind keeps; a newly registered kind runs these tests without edits.

The configurations (``CASES``) and shapes (``SHAPES``) are in ``layer_cases.py``.
"""

import copy
import io
import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from helpers import assert_compiled_matches_eager
from layer_cases import CASES, SHAPES, bias_of, build, float64_layer, is_linear, perturb_


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind, options, linear", CASES)
def test_forward_matches_dense_weight_or_refuses_it(kind, options, linear, shape, device):
    layer = float64_layer(kind, options, shape).to(device)
    x = torch.randn(4, shape[0], dtype=torch.float64, device=device)
    y = layer(x)
    assert y.shape == (4, shape[1]) and y.dtype == torch.float64
    if is_linear(layer, linear):
        dense = layer.to_dense()
        assert dense.shape == (shape[1], shape[0])
        torch.testing.assert_close(y, x @ dense.T + bias_of(layer), rtol=0, atol=1e-10)
    else:
        with pytest.raises(TypeError, match="not a linear map"):
            layer.to_dense()


@pytest.mark.parametrize("shape", [(5, 12), (12, 5), (1, 1)], ids=str)
@pytest.mark.parametrize("kind, options, linear", CASES)
def test_gradcheck_input_and_every_parameter(kind, options, linear, shape, device):
    layer = float64_layer(kind, options, shape).to(device)
    names = [name for name, p in layer.named_parameters() if p.requires_grad]
    params = tuple(dict(layer.named_parameters())[name].detach().clone().requires_grad_() for name in names)
    x = torch.randn(3, shape[0], dtype=torch.float64, device=device, requires_grad=True)

    def run(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params))


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_state_dict_reload_into_another_seed_is_bit_exact(kind, options, linear, device):
    layer = float64_layer(kind, options, (5, 12), seed=0).to(device)
    other = build(kind, options, 5, 12, seed=123, dtype=torch.float64).to(device)
    x = torch.randn(6, 5, dtype=torch.float64, device=device)
    assert not torch.equal(other(x), layer(x))
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other(x), layer(x))


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_save_load_deepcopy_and_pickle_preserve_outputs(kind, options, linear):
    layer = float64_layer(kind, options, (12, 5))
    x = torch.randn(6, 12, dtype=torch.float64)
    expected = layer(x)

    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(kind, options, 12, 5, seed=99, dtype=torch.float64)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh(x), expected)
    assert torch.equal(copy.deepcopy(layer)(x), expected)
    assert torch.equal(pickle.loads(pickle.dumps(layer))(x), expected)


@pytest.mark.parametrize("batch_shape", [(), (0,), (2, 3)], ids=str)
@pytest.mark.parametrize("kind, options, linear", CASES)
def test_batch_shapes(kind, options, linear, batch_shape, device):
    layer = float64_layer(kind, options, (7, 9)).to(device)
    x = torch.randn(*batch_shape, 7, dtype=torch.float64, device=device, requires_grad=True)
    y = layer(x)
    assert y.shape == (*batch_shape, 9)
    rows = layer(x.detach().reshape(-1, 7)).reshape(*batch_shape, 9)
    torch.testing.assert_close(y, rows, rtol=0, atol=1e-12)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_non_contiguous_expanded_and_gradless_inputs(kind, options, linear, device):
    layer = float64_layer(kind, options, (7, 9)).to(device)
    base = torch.randn(7, 4, dtype=torch.float64, device=device)
    expected = layer(base.T.contiguous())
    torch.testing.assert_close(layer(base.T), expected, rtol=0, atol=1e-12)  # non-contiguous
    row = torch.randn(1, 7, dtype=torch.float64, device=device)
    torch.testing.assert_close(layer(row.expand(5, 7)), layer(row).expand(5, 9), rtol=0, atol=1e-12)
    with torch.no_grad():
        no_grad = layer(base.T)
    with torch.inference_mode():
        inference = layer(base.T)
    assert not no_grad.requires_grad and not inference.requires_grad
    torch.testing.assert_close(no_grad, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(inference, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_bad_inputs_name_what_was_expected(kind, options, linear):
    layer = build(kind, options, 6, 4)
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        layer(torch.randn(3, 5))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(3, 6, dtype=torch.int64))
    with pytest.raises((ValueError, RuntimeError), match="cpu"):
        layer(torch.randn(3, 6, device="meta"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("kind, options, linear", CASES)
def test_half_inputs_and_half_layers_keep_the_input_dtype(kind, options, linear, dtype, device):
    layer = perturb_(build(kind, options, 16, 12)).to(device)
    x = torch.randn(5, 16, device=device)
    reference = layer(x)
    scale = reference.abs().max().item() + 1
    tol = 0.05 * scale
    out = layer(x.to(dtype))  # float32 layer, half input
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference, rtol=0, atol=tol)
    half_layer = copy.deepcopy(layer).to(dtype)  # the whole layer cast, as model.to(dtype) does
    out = half_layer(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference, rtol=0, atol=tol)
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == dtype for p in half_layer.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_autocast_bfloat16(kind, options, linear, device):
    layer = perturb_(build(kind, options, 16, 12)).to(device)
    x = torch.randn(5, 16, device=device, requires_grad=True)
    reference = layer(x)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype in (torch.bfloat16, torch.float32)
    torch.testing.assert_close(out.float(), reference, rtol=0, atol=0.05 * (reference.abs().max().item() + 1))
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.slow
@pytest.mark.parametrize("kind, options, linear", CASES)
def test_compiled_fullgraph_matches_eager(kind, options, linear, device):
    layer = float64_layer(kind, options, (12, 5)).to(device)
    x = torch.randn(3, 12, dtype=torch.float64, device=device, requires_grad=True)
    assert_compiled_matches_eager(layer, x, tol=1e-10)


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_same_seed_same_init_and_reset_parameters_redraws(kind, options, linear):
    first, second = build(kind, options, 9, 7, seed=5), build(kind, options, 9, 7, seed=5)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    before = {name: p.detach().clone() for name, p in first.named_parameters()}
    torch.manual_seed(6)
    first.reset_parameters()
    assert any(not torch.equal(before[name], p) for name, p in first.named_parameters())


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_on_device_matches_cpu(kind, options, linear, device):
    layer = float64_layer(kind, options, (12, 5))
    moved = build(kind, options, 12, 5, seed=7, dtype=torch.float64).to(device)
    moved.load_state_dict(layer.state_dict())
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(moved(x.to(device)).cpu(), layer(x), rtol=0, atol=1e-10)


@given(
    case=st.sampled_from(CASES),
    in_features=st.integers(1, 40),
    out_features=st.integers(1, 40),
    batch_shape=st.lists(st.integers(0, 3), max_size=2),
)
def test_sweep_never_crashes_and_linear_kinds_match_their_dense_weight(case, in_features, out_features, batch_shape):
    kind, options, linear = case.values
    layer = float64_layer(kind, options, (in_features, out_features))
    x = torch.randn(*batch_shape, in_features, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (*batch_shape, out_features)
    if is_linear(layer, linear):
        torch.testing.assert_close(y, x @ layer.to_dense().T + bias_of(layer), rtol=0, atol=1e-10)
