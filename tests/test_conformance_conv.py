"""The contract of the quadratic convolutions (``QuadraticConv1d/2d/3d``), over the forms × geometries of
``conv_cases.CASES`` (a user-registered form among them): the layers' equivalents of ``test_conformance.py``,
``test_conformance_func.py`` and ``test_conformance_state.py``, and ``from_conv``'s exactness.
"""

import copy
import io
import pickle

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

import structlin
from conv_cases import (CASES, FEW, GEOMETRIES, IN, OUT, build, float64_layer, input_for, options, perturb_,
                        reference, registered_user_form, torch_conv)
from helpers import assert_compiled_matches_eager

TOL = dict(rtol=1e-9, atol=1e-10)
cases = pytest.mark.parametrize("form, geometry", CASES)


@pytest.fixture(autouse=True, scope="module")
def user_form():
    with registered_user_form():
        yield


def _trainable(layer):
    named = [(name, p.detach().clone()) for name, p in layer.named_parameters() if p.requires_grad]
    return tuple(name for name, _ in named), tuple(value for _, value in named)


def _with_parameters(layer, names):
    return lambda x, *values: functional_call(layer, dict(zip(names, values)), (x,))


# ------------------------------------------------------------------------------------------------ forward, shapes
@cases
def test_forward_is_the_form_of_explicit_convolutions(form, geometry, device):
    layer = float64_layer(form, geometry).to(device)
    x = input_for(geometry).to(device)
    expected = reference(layer.cpu(), x.cpu(), geometry)
    layer.to(device)
    torch.testing.assert_close(layer(x).cpu(), expected, rtol=0, atol=1e-10)


@cases
def test_output_shapes_are_the_convs_batched_and_unbatched(form, geometry):
    layer, conv = float64_layer(form, geometry), torch_conv(geometry).double()
    x = input_for(geometry)
    y = layer(x)
    assert y.shape == conv(x).shape == layer.output_shape(x.shape)
    unbatched = layer(x[1])
    assert unbatched.shape == conv(x[1]).shape
    torch.testing.assert_close(unbatched, y[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("stride, padding, dilation",
                         [(1, 0, 1), (2, 1, 1), (3, 2, 2), (2, "valid", 3), (1, "same", 2)])
@pytest.mark.parametrize("more_dilation", [0, 1, 3])
@pytest.mark.parametrize("form", ["xu", "lowrank"])
def test_output_shape_equals_nn_conv_for_every_stride_padding_dilation(form, stride, padding, dilation,
                                                                      more_dilation):
    for length in (12, 13, 16):
        conv = torch.nn.Conv1d(3, 5, 3, stride=stride, padding=padding, dilation=dilation)
        layer = structlin.QuadraticConv1d(3, 5, 3, stride=stride, padding=padding, dilation=dilation, form=form,
                                          rank=2, quadratic_dilation=dilation + more_dilation, init="random")
        x = torch.randn(2, 3, length)
        assert layer(x).shape == conv(x).shape


# ------------------------------------------------------------------------------------------------ from_conv
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@cases
def test_from_conv_is_bit_exact_in_float32(form, geometry, memory_format):
    dims = GEOMETRIES[geometry][0]
    for bias in (True, False):
        torch.manual_seed(4)
        conv = torch_conv(geometry, bias=bias)
        x = input_for(geometry, dtype=torch.float32)
        if memory_format == "channels_last":
            if dims == 1:
                pytest.skip("channels_last is for 4-D and 5-D tensors")
            fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
            conv, x = conv.to(memory_format=fmt), x.to(memory_format=fmt)
        extra = {k: v for k, v in options(form, geometry).items() if k in ("form", "rank", "quadratic_dilation")}
        layer = type(build(form, geometry)).from_conv(conv, **extra)
        assert torch.equal(layer(x), conv(x))
        assert torch.equal(layer(x[0]), conv(x[0]))


@cases
def test_from_conv_float64_exact_and_then_trains_every_part(form, geometry):
    conv = torch_conv(geometry).double()
    extra = {k: v for k, v in options(form, geometry).items() if k in ("form", "rank", "quadratic_dilation")}
    layer = type(build(form, geometry)).from_conv(conv, **extra)
    x = input_for(geometry)
    assert torch.equal(layer(x), conv(x))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    silent = {name for name, _ in layer.named_parameters()}
    for _ in range(2):  # every parameter gets a gradient within two steps (U, V behind P = 0 on the second)
        optimizer.zero_grad()
        layer(x).square().mean().backward()
        silent -= {name for name, p in layer.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
    assert silent == set()


# ------------------------------------------------------------------------------------------------ gradients
@cases
def test_gradcheck_input_and_every_parameter(form, geometry):
    layer = float64_layer(form, geometry)
    names, values = _trainable(layer)
    x = input_for(geometry, batch=1).requires_grad_()
    assert torch.autograd.gradcheck(_with_parameters(layer, names), (x, *(v.requires_grad_() for v in values)))


@cases
def test_jacfwd_jacrev_jvp_and_grad_match_the_reverse_mode_jacobian(form, geometry):
    layer = float64_layer(form, geometry)
    names, values = _trainable(layer)
    f = _with_parameters(layer, names)
    x = input_for(geometry, batch=1)
    inputs = (x, *values)
    argnums = tuple(range(len(inputs)))
    expected = torch.autograd.functional.jacobian(f, inputs)
    torch.testing.assert_close(torch.func.jacfwd(f, argnums=argnums)(*inputs), expected, **TOL)
    torch.testing.assert_close(torch.func.jacrev(f, argnums=argnums)(*inputs), expected, **TOL)
    tangents = tuple(torch.randn_like(t) for t in inputs)
    _, tangent = torch.func.jvp(f, inputs, tangents)
    contracted = sum((j.reshape(-1, t.numel()) @ t.reshape(-1)).reshape(tangent.shape)
                     for j, t in zip(expected, tangents))
    torch.testing.assert_close(tangent, contracted, **TOL)
    with fwAD.dual_level():
        dual = fwAD.unpack_dual(layer(fwAD.make_dual(x, tangents[0]))).tangent
    torch.testing.assert_close(dual, (expected[0].reshape(-1, x.numel()) @ tangents[0].reshape(-1)).view_as(dual),
                               **TOL)
    loss = lambda *v: f(*v).square().sum()  # noqa: E731
    leaves = [t.clone().requires_grad_() for t in inputs]
    torch.testing.assert_close(torch.func.grad(loss, argnums=argnums)(*inputs),
                               torch.autograd.grad(loss(*leaves), leaves), **TOL)


@cases
def test_vmap_over_samples_parameter_sets_and_per_sample_gradients(form, geometry):
    layer = float64_layer(form, geometry)
    x = input_for(geometry, batch=3)
    torch.testing.assert_close(torch.func.vmap(layer)(x), layer(x), **TOL)  # each sample unbatched
    models = [float64_layer(form, geometry, seed=s) for s in (0, 1)]
    params, buffers = torch.func.stack_module_state(models)
    got = torch.func.vmap(lambda p, b, v: functional_call(models[0], (p, b), (v,)), in_dims=(0, 0, None))(
        params, buffers, x)
    torch.testing.assert_close(got, torch.stack([m(x) for m in models]), **TOL)
    names, values = _trainable(layer)
    f = _with_parameters(layer, names)
    loss = lambda values, sample: f(sample.unsqueeze(0), *values).square().sum()  # noqa: E731
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(values, x)
    for r in range(x.shape[0]):
        leaves = [v.clone().requires_grad_() for v in values]
        torch.testing.assert_close(tuple(g[r] for g in per_sample), torch.autograd.grad(loss(leaves, x[r]), leaves),
                                   **TOL)


@pytest.mark.parametrize("form, geometry", FEW)
def test_hessian_in_the_input_is_central_differences_of_the_gradient(form, geometry):
    """The layer is a polynomial of degree 2 in its input, so central differences of the gradient are exact up
    to rounding."""
    layer = float64_layer(form, geometry)
    x = input_for(geometry, batch=1)
    c = torch.randn(layer(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    n = x.numel()
    got = torch.func.hessian(lambda v: (c * layer(v)).sum())(x).reshape(n, n)
    step = 1e-4 * torch.eye(n, dtype=x.dtype).view(n, *x.shape[1:])

    def gradients(points):
        points = points.clone().requires_grad_()
        return torch.autograd.grad((c * layer(points)).sum(), points)[0].reshape(n, n)

    expected = ((gradients(x + step) - gradients(x - step)) / 2e-4).T
    torch.testing.assert_close(got, got.T, **TOL)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------ state
@cases
def test_state_dict_reload_into_another_seed_is_bit_exact_and_survives_save_copy_pickle(form, geometry):
    layer = float64_layer(form, geometry, seed=0)
    other = build(form, geometry, seed=123, dtype=torch.float64)
    x = input_for(geometry)
    assert not torch.equal(other(x), layer(x))
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    expected = layer(x)
    assert torch.equal(other(x), expected)
    assert torch.equal(copy.deepcopy(layer)(x), expected)
    assert torch.equal(pickle.loads(pickle.dumps(layer))(x), expected)


@cases
def test_same_seed_same_init_and_reset_parameters_redraws(form, geometry):
    first, second = build(form, geometry, seed=5), build(form, geometry, seed=5)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    before = {name: p.detach().clone() for name, p in first.named_parameters()}
    torch.manual_seed(6)
    first.reset_parameters()
    assert any(not torch.equal(before[name], p) for name, p in first.named_parameters())


@pytest.mark.parametrize("how", ["device", "context"])
@cases
def test_meta_build_runs_shapes_and_to_empty_then_seeded_reset_equals_a_normal_build(form, geometry, how):
    if how == "device":
        layer = build(form, geometry, device="meta")
    else:
        with torch.device("meta"):
            layer = build(form, geometry)
    normal = build(form, geometry, seed=11)
    assert all(t.is_meta for t in layer.state_dict().values())
    shapes = lambda m: [(k, t.shape) for k, t in m.state_dict().items()]  # noqa: E731
    assert shapes(layer) == shapes(normal)
    x = input_for(geometry, dtype=torch.float32)
    y = layer(x.to("meta"))
    assert y.is_meta and y.shape == normal(x).shape
    layer.to_empty(device="cpu")
    torch.manual_seed(11)
    layer.reset_parameters()
    for (name, a), b in zip(layer.state_dict().items(), normal.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(layer(x), normal(x))


@cases
def test_unsupported_dtypes_are_refused_at_construction(form, geometry):
    for dtype in (torch.int64, torch.complex64):
        with pytest.raises(TypeError, match=r"float16, bfloat16, float32, float64; got dtype="):
            build(form, geometry, dtype=dtype)


# ------------------------------------------------------------------------------------------------ inputs
@cases
def test_channels_last_non_contiguous_and_empty_inputs(form, geometry):
    dims = GEOMETRIES[geometry][0]
    layer = float64_layer(form, geometry)
    x = input_for(geometry)
    expected = layer(x)
    if dims > 1:
        fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
        y = layer(x.to(memory_format=fmt))
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
        conv = torch_conv(geometry).double()
        assert y.is_contiguous(memory_format=fmt) == conv(x.to(memory_format=fmt)).is_contiguous(memory_format=fmt)
    wide = input_for(geometry, channels=2 * IN)
    strided = wide[:, ::2]  # every other channel: a non-contiguous view
    torch.testing.assert_close(layer(strided), layer(strided.contiguous()), rtol=0, atol=1e-12)
    order = list(range(x.dim()))[::-1]
    flipped = x.permute(order).contiguous().permute(order)  # every stride reversed
    assert not flipped.is_contiguous()
    torch.testing.assert_close(layer(flipped), expected, rtol=0, atol=1e-12)
    empty = input_for(geometry, batch=0).requires_grad_()
    y = layer(empty)
    assert y.shape == (0, *expected.shape[1:])
    y.sum().backward()
    assert empty.grad.shape == empty.shape
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@cases
def test_half_inputs_half_layers_and_autocast(form, geometry, dtype):
    layer = perturb_(build(form, geometry))
    x = input_for(geometry, dtype=torch.float32)
    reference_ = layer(x)
    tol = 0.05 * (reference_.abs().max().item() + 1)
    out = layer(x.to(dtype))  # a float32 layer computes half inputs in float32
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference_, rtol=0, atol=tol)
    half = copy.deepcopy(layer).to(dtype)
    out = half(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference_, rtol=0, atol=tol)
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == dtype for p in half.parameters())
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    torch.testing.assert_close(out.float(), reference_, rtol=0, atol=tol)
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@cases
def test_bad_inputs_and_arguments_name_what_was_expected(form, geometry):
    dims = GEOMETRIES[geometry][0]
    layer = build(form, geometry)
    x = input_for(geometry, dtype=torch.float32)
    shape = r"\(N, 4, " + ", ".join({1: "L", 2: "H, W", 3: "D, H, W"}[dims].split(", ")) + r"\)"
    with pytest.raises(ValueError, match=shape + r" or \(4, "):
        layer(input_for(geometry, channels=IN + 1, dtype=torch.float32))
    with pytest.raises(ValueError, match=shape):
        layer(x[..., None])
    with pytest.raises(TypeError, match="floating"):
        layer(x.long())
    with pytest.raises(ValueError, match="cpu"):
        layer(x.to("meta"))
    with pytest.raises(TypeError, match="float32"):
        layer(x.double())
    with pytest.raises(ValueError, match="unknown quadratic form 'cubic'; valid names: .*fan.*lowrank.*xu"):
        build(form, geometry, form="cubic")
    with pytest.raises(ValueError, match=r"rank=<positive int> is required for form='lowrank'"):
        build(form, geometry, form="lowrank", rank=None)
    for rank in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="rank must be a positive int"):
            build(form, geometry, form="lowrank", rank=rank)
    with pytest.raises(ValueError, match="quadratic_dilation must be a positive int or"):
        build(form, geometry, quadratic_dilation=0)
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        type(layer)(IN, OUT, 3, groups=3, form="xu")
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        type(layer)(0, OUT, 3)


# ------------------------------------------------------------------------------------------------ cost, compile
@cases
def test_cost_equals_what_the_report_measures(form, geometry):
    layer = perturb_(build(form, geometry))
    for batch in (2, None):
        x = input_for(geometry, batch=batch or 1, dtype=torch.float32)
        x = x if batch else x[0]
        measured = structlin.report(layer, x)
        assert not measured.unsupported()
        assert measured.total == layer.cost(tuple(x.shape))
    x = input_for(geometry, dtype=torch.float32)
    assert structlin.report(layer, x).total.params == sum(p.numel() for p in layer.parameters())


@cases
def test_param_groups_split_first_order_and_quadratic_parameters(form, geometry):
    layer = build(form, geometry)
    first = {id(p) for p in layer.first_order_parameters()}
    quadratic = {id(p) for p in layer.quadratic_parameters()}
    assert first and quadratic and not first & quadratic
    assert first | quadratic == {id(p) for p in layer.parameters()}
    model = torch.nn.Sequential(layer, torch.nn.Flatten(), torch.nn.LazyLinear(3))
    groups = structlin.param_groups(model, lr=1e-2, quadratic_lr_scale=0.1)
    assert {id(p) for p in groups[1]["params"]} == quadratic and groups[1]["lr"] == pytest.approx(1e-3)
    assert first <= {id(p) for p in groups[0]["params"]}


@pytest.mark.slow
@pytest.mark.parametrize("form, geometry", FEW)
def test_compiled_fullgraph_matches_eager(form, geometry):
    layer = float64_layer(form, geometry)
    assert_compiled_matches_eager(layer, input_for(geometry).requires_grad_(), tol=1e-10)
