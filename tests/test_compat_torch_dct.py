"""``structlin.compat.torch_dct`` against torch-dct 0.1.6 itself, name by name, and torch-dct's own test logic run
against the drop-in."""

import inspect

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
import torch_dct as reference
from torch import nn

import structlin.compat.torch_dct as torch_dct

FUNCTIONS = ["dct", "idct", "dct1", "idct1", "dct_2d", "idct_2d", "dct_3d", "idct_3d", "apply_linear_2d",
             "apply_linear_3d"]
WITH_NORM = ["dct", "idct", "dct_2d", "idct_2d", "dct_3d", "idct_3d"]
TYPES = ["dct", "idct", "dct1", "idct1"]


def _public(module) -> set:
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and not inspect.ismodule(value) and getattr(value, "__module__", "").startswith(module.__name__)}


def test_every_public_name_of_torch_dct_exists_with_its_signature():
    names = _public(reference)
    assert names == set(FUNCTIONS) | {"LinearDCT"}
    assert set(torch_dct.__all__) == names
    for name in names:
        ours, theirs = getattr(torch_dct, name), getattr(reference, name)
        assert inspect.signature(ours) == inspect.signature(theirs), name


def test_linear_dct_is_an_nn_linear_like_torch_dcts():
    layer, theirs = torch_dct.LinearDCT(8, "dct"), reference.LinearDCT(8, "dct")
    assert isinstance(layer, nn.Linear) and isinstance(theirs, nn.Linear)
    assert (layer.in_features, layer.out_features, layer.N, layer.type, layer.norm) == (8, 8, 8, "dct", None)
    assert layer.bias is None and not layer.weight.requires_grad
    assert layer.state_dict().keys() == theirs.state_dict().keys()


def _shape(name: str, n: int) -> tuple:
    return {"2d": (3, n, n + 1), "3d": (2, n, 3, n + 2)}.get(name[-2:], (4, n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 8, 17, 64])
@pytest.mark.parametrize("norm", [None, "ortho"])
@pytest.mark.parametrize("name", WITH_NORM)
def test_functions_with_norm_match_torch_dct(name, norm, n, dtype):
    x = torch.randn(_shape(name, n), dtype=dtype)
    ours, theirs = getattr(torch_dct, name)(x, norm=norm), getattr(reference, name)(x, norm=norm)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol * theirs.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 8, 17, 64])
@pytest.mark.parametrize("name", ["dct1", "idct1"])
def test_dct1_and_idct1_match_torch_dct(name, n, dtype):
    x = torch.randn(3, 2, n, dtype=dtype)
    ours, theirs = getattr(torch_dct, name)(x), getattr(reference, name)(x)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol * theirs.abs().max().item())


@pytest.mark.parametrize("name", WITH_NORM + ["dct1", "idct1"])
def test_gradients_match_torch_dct(name):
    x = torch.randn(_shape(name, 6), dtype=torch.float64, requires_grad=True)
    g = torch.randn(x.shape, dtype=torch.float64)
    for norm in ([None, "ortho"] if name in WITH_NORM else [None]):
        kwargs = {"norm": norm} if name in WITH_NORM else {}
        grads = [torch.autograd.grad(getattr(m, name)(x, **kwargs), x, g)[0] for m in (torch_dct, reference)]
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm", [None, "ortho"])
@pytest.mark.parametrize("kind", TYPES)
def test_linear_dct_matches_torch_dct(kind, norm):
    ours, theirs = torch_dct.LinearDCT(16, kind, norm=norm), reference.LinearDCT(16, kind, norm=norm)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=2e-6)
    x = torch.randn(5, 3, 16)
    y = ours(x)
    assert y.shape == theirs(x).shape and y.dtype == torch.float32
    torch.testing.assert_close(y, theirs(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, F.linear(x, ours.weight), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("norm", [None, "ortho"])
@pytest.mark.parametrize("kind", TYPES)
def test_apply_linear_matches_torch_dct(kind, norm, k):
    apply = f"apply_linear_{k}d"
    ours, theirs = torch_dct.LinearDCT(6, kind, norm=norm), reference.LinearDCT(6, kind, norm=norm)
    x = torch.randn(2, *([6] * k))
    y = getattr(torch_dct, apply)(x, ours)
    assert y.shape == x.shape
    torch.testing.assert_close(y, getattr(reference, apply)(x, theirs), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("k", [2, 3])
def test_apply_linear_with_any_linear_layer_matches_torch_dct(k):
    layer = nn.Linear(5, 5)  # a bias, and not a transform: applied along each dimension as in torch-dct
    x = torch.randn(2, *([5] * k))
    apply = f"apply_linear_{k}d"
    torch.testing.assert_close(getattr(torch_dct, apply)(x, layer), getattr(reference, apply)(x, layer))
    biased = torch_dct.LinearDCT(5, "dct", bias=True)
    with torch.no_grad():
        biased.bias.uniform_()
    theirs = reference.LinearDCT(5, "dct", bias=True)
    theirs.load_state_dict(biased.state_dict())
    torch.testing.assert_close(getattr(torch_dct, apply)(x, biased), getattr(reference, apply)(x, theirs),
                               rtol=1e-5, atol=1e-4)


def _counted_ops(fn, *args) -> set:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return {str(op) for op in counter.get_flop_counts()["Global"]}


def test_linear_dct_runs_the_fast_transform_while_its_weight_holds_it():
    layer = torch_dct.LinearDCT(32, "dct", norm="ortho")
    x = torch.randn(4, 32)
    assert _counted_ops(layer, x) == {"structlin.dct"}
    assert _counted_ops(torch_dct.apply_linear_2d, torch.randn(2, 32, 32), layer) == {"structlin.dctn"}
    assert _counted_ops(torch_dct.LinearDCT(32, "idct1"), x) == {"structlin.dct1"}


def test_linear_dct_after_its_weight_changes_is_a_plain_linear_layer():
    layer = torch_dct.LinearDCT(16, "dct")
    x = torch.randn(3, 16)
    with torch.no_grad():
        layer.weight[0, 0] += 1.0
    layer(x)  # the first call after the change compares the weight with the transform's matrix, once
    assert _counted_ops(layer, x) == {"aten.mm"}
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight))
    layer.reset_parameters()
    assert _counted_ops(layer, x) == {"structlin.dct"}
    layer.weight.requires_grad_(True)  # trainable: the weight gets its gradient through the matrix product
    layer(x).sum().backward()
    assert layer.weight.grad is not None


def test_linear_dct_loads_torch_dct_state_and_converts_dtype():
    theirs = reference.LinearDCT(64, "idct", norm="ortho")
    layer = torch_dct.LinearDCT(64, "idct", norm="ortho")
    layer.load_state_dict(theirs.state_dict())  # torch-dct's float32 matrix, rounded differently from ours
    x = torch.randn(3, 64)
    torch.testing.assert_close(layer(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert _counted_ops(layer, x) == {"structlin.idct"}  # torch-dct's weight is the transform to float rounding
    double = torch_dct.LinearDCT(64, "dct").double()
    torch.testing.assert_close(double(x.double()), reference.dct(x.double()), rtol=1e-6, atol=1e-5)
    with pytest.raises(RuntimeError):  # as nn.Linear: the input's dtype must be the weight's
        double(x)


def test_linear_dct_bias_starts_at_zero_and_learns():
    layer = torch_dct.LinearDCT(8, "dct", norm="ortho", bias=True)
    assert torch.equal(layer.bias, torch.zeros(8)) and layer.bias.requires_grad
    x = torch.randn(2, 8)
    layer(x).sum().backward()
    torch.testing.assert_close(layer.bias.grad, torch.full((8,), 2.0))
    torch.testing.assert_close(layer(x), torch_dct.dct(x, "ortho"))


def test_linear_dct_under_torch_func():
    layer = torch_dct.LinearDCT(8, "dct")
    x = torch.randn(5, 8)
    torch.testing.assert_close(torch.func.vmap(layer)(x), layer(x))
    jacobian = torch.func.jacrev(layer)(x[0])
    torch.testing.assert_close(jacobian, layer.weight, rtol=1e-5, atol=1e-5)
    other = torch.randn(8, 8)
    swapped = torch.func.functional_call(layer, {"weight": other}, (x,))
    torch.testing.assert_close(swapped, x @ other.T)
    batched = torch.func.vmap(lambda w: torch.func.functional_call(layer, {"weight": w}, (x,)))(torch.stack([other, 2 * other]))
    torch.testing.assert_close(batched[1], 2 * x @ other.T)


def test_linear_dct_under_torch_compile_is_the_matrix_product():
    layer = torch_dct.LinearDCT(16, "dct", norm="ortho")
    x = torch.randn(3, 16)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", WITH_NORM)
def test_norms_torch_dct_would_ignore_raise(name):
    with pytest.raises(ValueError, match="norm must be None or 'ortho'"):
        getattr(torch_dct, name)(torch.ones(4, 4, 4), norm="forward")
    torch.testing.assert_close(getattr(torch_dct, name)(torch.ones(4, 4, 4), norm="backward"),
                               getattr(torch_dct, name)(torch.ones(4, 4, 4)))


def test_other_clear_errors():
    with pytest.raises(ValueError, match="length >= 2"):
        torch_dct.dct1(torch.ones(3, 1))
    with pytest.raises(ValueError, match="type must be one of"):
        torch_dct.LinearDCT(4, "dst")
    with pytest.raises(IndexError):
        torch_dct.dct_2d(torch.ones(4))


def test_half_precision_and_non_contiguous_inputs_work():
    x = torch.randn(8, 6)
    assert torch_dct.dct(x.half()).dtype == torch.float16
    torch.testing.assert_close(torch_dct.dct1(x.T), reference.dct1(x.T.contiguous()), rtol=1e-5, atol=1e-5)
    assert torch_dct.dct_2d(x.T).is_contiguous()


# torch-dct's own tests (torch_dct/test/test_dct.py and test_lineardct.py), in our words: scipy references for
# the forward transforms, round trips for the inverses; float64 to 1e-10 for the functions, float32 to 1e-3 for
# LinearDCT, as there.

_rng = np.random.default_rng(1)


def _one_d_inputs():
    return [_rng.standard_normal((1, n)) for n in (2, 5, 32, 111)] + [_rng.standard_normal((2,) * d) for d in (2, 3, 4)]


@pytest.mark.parametrize("via", ["functions", "linear"])
def test_own_dct1(via):
    for x in _one_d_inputs():
        act = _transform(via, "dct1", torch.tensor(x))
        np.testing.assert_allclose(act, scipy.fft.dct(x, type=1), rtol=0, atol=_eps(via))


@pytest.mark.parametrize("via", ["functions", "linear"])
def test_own_idct1(via):
    for n in (2, 5, 32, 111):
        x = _rng.standard_normal((1, n))
        back = _transform(via, "idct1", torch.from_numpy(_transform(via, "dct1", torch.tensor(x))))
        np.testing.assert_allclose(back, x, rtol=0, atol=_eps(via))


@pytest.mark.parametrize("via", ["functions", "linear"])
@pytest.mark.parametrize("norm", [None, "ortho"])
def test_own_dct(via, norm):
    inputs = [_rng.standard_normal((1, n)) for n in (2, 3, 5, 32, 111)]
    inputs += [_rng.standard_normal((2,) * d) for d in (2, 3, 4, 11)]
    for x in inputs:
        act = _transform(via, "dct", torch.tensor(x), norm)
        np.testing.assert_allclose(act, scipy.fft.dct(x, type=2, norm=norm), rtol=0, atol=_eps(via))


@pytest.mark.parametrize("via", ["functions", "linear"])
@pytest.mark.parametrize("norm", [None, "ortho"])
def test_own_idct(via, norm):
    for n in (5, 2, 32, 111):
        x = _rng.standard_normal((1, n))
        back = _transform(via, "idct", torch.from_numpy(_transform(via, "dct", torch.tensor(x), norm)), norm)
        np.testing.assert_allclose(back, x, rtol=0, atol=_eps(via))


def _eps(via: str) -> float:
    return 1e-10 if via == "functions" else 1e-3


def _transform(via: str, kind: str, x: torch.Tensor, norm=None) -> np.ndarray:
    """``kind`` of ``x`` by the function (float64), or by a LinearDCT of the input's last size (float32)."""
    if via == "functions":
        fn = getattr(torch_dct, kind)
        return (fn(x) if kind.endswith("1") else fn(x, norm=norm)).numpy()
    layer = torch_dct.LinearDCT(x.shape[-1], kind, norm=norm)
    return layer(x.float()).detach().double().numpy()


def _dct_along(x: np.ndarray, axes) -> np.ndarray:
    for axis in axes:
        x = scipy.fft.dct(x, type=2, axis=axis)
    return x


def _nd(via: str, k: int, kind: str, x: torch.Tensor) -> np.ndarray:
    if via == "functions":
        return getattr(torch_dct, f"{kind}_{k}d")(x).numpy()
    layer = torch_dct.LinearDCT(x.shape[1], kind)
    return getattr(torch_dct, f"apply_linear_{k}d")(x.float(), layer).detach().double().numpy()


def _nd_shapes(via: str, k: int):
    sizes = (2, 5, 32)
    if via == "linear":  # one LinearDCT serves every dimension: square inputs
        return [(1,) + (n,) * k for n in sizes]
    grids = np.stack(np.meshgrid(*([sizes] * k), indexing="ij"), -1).reshape(-1, k)
    return [(1, *map(int, g)) for g in grids]


@pytest.mark.parametrize("via", ["functions", "linear"])
@pytest.mark.parametrize("k", [2, 3])
def test_own_dct_nd(via, k):
    for shape in _nd_shapes(via, k):
        x = _rng.standard_normal(shape)
        np.testing.assert_allclose(_nd(via, k, "dct", torch.tensor(x)), _dct_along(x, range(k, 0, -1)), rtol=0,
                                   atol=_eps(via) * (1 if via == "functions" else 10 ** k))


@pytest.mark.parametrize("via", ["functions", "linear"])
@pytest.mark.parametrize("k", [2, 3])
def test_own_idct_nd(via, k):
    for shape in _nd_shapes(via, k):
        x = _rng.standard_normal(shape)
        back = _nd(via, k, "idct", torch.from_numpy(_nd(via, k, "dct", torch.tensor(x))))
        np.testing.assert_allclose(back, x, rtol=0, atol=_eps(via))
