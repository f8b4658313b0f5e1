"""ACDC at training sizes: recomputation, the native cascade and its FFT, row chunks, and the dense path.

Every comparison is in float64 against an independent computation: ``torch.fft`` for structlin's own FFT, the
pure-PyTorch path (``native_kernels(False)``) or scipy's DCT for the native cascade, and the cascade on the rows
for the dense path.
"""

import numpy as np
import pytest
import torch

import structlin
from structlin import ACDC, _native
from structlin.costs import Cost
from structlin.layers.acdc import plan
from structlin.transforms import acdc as acdc_transform
from structlin.transforms import native_kernels
from structlin.transforms._backend import uses_native
from structlin.transforms.acdc import acdc_cascade

from helpers import acdc_scipy_reference

native_only = pytest.mark.skipif(not uses_native(torch.empty(1)), reason="native kernels unavailable")


def _layer(in_features, out_features, depth, seed=0, **options) -> ACDC:
    torch.manual_seed(seed)
    layer = ACDC(in_features, out_features, depth=depth, dtype=torch.float64, **options)
    with torch.no_grad():  # far from the identity, so that a wrong index cannot hide
        layer.A.normal_()
        layer.D.normal_()
        layer.bias.normal_()
    return layer


def _gradients(layer, x, g):
    """``(y, grad_x, grad_A, grad_D, grad_bias)`` for the output gradient ``g``."""
    x = x.detach().requires_grad_(True)
    y = layer(x)
    return (y, *torch.autograd.grad(y, (x, layer.A, layer.D, layer.bias), g))


def _assert_close(got, expected, tol=1e-9):
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


# --- structlin's FFT --------------------------------------------------------------------------------------------


@native_only
def test_chunks_are_one_vector_of_rows():
    width = _native.lanes(torch.float32)
    assert width in (4, 8, 16) and _native.lanes(torch.float64) == width // 2


@native_only
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-14), (torch.float32, 2e-6)])
def test_native_fft_matches_torch_fft_for_every_size_it_handles(dtype, tol):
    generator = torch.Generator().manual_seed(0)
    bits = acdc_transform.NATIVE_MAX_SIZE.bit_length() - 1
    for n in (2**b for b in range(1, bits + 1)):
        rows = 21 if n <= 4096 else 3  # a partial chunk of rows in every case
        table, br = acdc_transform._fft_tables(n, dtype)
        x = torch.randn(rows, n, dtype=dtype, generator=generator)
        spectrum = _native.fft_real(x, torch.empty(rows, n // 2 + 1, 2, dtype=dtype), table, br, inverse=False)
        expected = torch.view_as_real(torch.fft.rfft(x))
        torch.testing.assert_close(spectrum, expected, rtol=0, atol=tol * expected.abs().max().item())
        z = torch.randn(rows, n // 2 + 1, 2, dtype=dtype, generator=generator)
        back = _native.fft_real(z, torch.empty(rows, n, dtype=dtype), table, br, inverse=True)
        expected = torch.fft.irfft(torch.view_as_complex(z), n=n)  # drops the imaginary parts of bins 0 and n/2
        torch.testing.assert_close(back, expected, rtol=0, atol=tol * expected.abs().max().item())


# --- the native cascade against the PyTorch path and scipy --------------------------------------------------------

NATIVE_CASES = [  # (in, out, depth, relu, permute): powers of two from 2, padding and truncation, 1 to 5 blocks
    (2, 2, 2, False, True),
    (4, 3, 1, False, False),
    (5, 8, 3, True, True),
    (64, 64, 5, True, True),
    (100, 128, 2, False, True),
    (256, 200, 3, True, False),
    (1000, 1024, 2, True, True),
    (2048, 2048, 2, False, True),
]


@native_only
@pytest.mark.parametrize("rows", [1, 37])  # fewer rows than a chunk; two full chunks and a partial one
@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("in_features, out_features, depth, relu, permute", NATIVE_CASES)
def test_native_cascade_matches_the_pytorch_path_and_scipy(in_features, out_features, depth, relu, permute,
                                                          recompute, rows):
    layer = _layer(in_features, out_features, depth, activation="relu" if relu else None, permute=permute,
                   recompute=recompute, path="fft")
    assert acdc_transform.native_cascade(layer.size, torch.float64)
    x = torch.randn(rows, in_features, dtype=torch.float64)
    g = torch.randn(rows, out_features, dtype=torch.float64)
    native = _gradients(layer, x, g)
    np.testing.assert_allclose(native[0].detach().numpy(), acdc_scipy_reference(layer, x), rtol=0, atol=1e-9)
    with native_kernels(False):
        torch_path = _gradients(layer, x, g)
    _assert_close(native, torch_path)


@native_only
def test_native_cascade_in_float32_and_with_batch_shapes():
    layer = _layer(48, 64, 3, activation="relu")
    x = torch.randn(3, 7, 48, dtype=torch.float64)
    g = torch.randn(3, 7, 64, dtype=torch.float64)
    expected = _gradients(layer, x, g)
    layer32 = layer.float()
    got = _gradients(layer32, x.float(), g.float())
    assert got[0].shape == (3, 7, 64)
    _assert_close([t.double() for t in got], expected, tol=2e-5)


@native_only
def test_native_backward_is_deterministic():
    """The gradient sums are added in a fixed order whichever worker ran which rows."""
    layer = ACDC(256, 256, depth=4, path="fft")
    x = torch.randn(777, 256, requires_grad=True)
    runs = []
    for _ in range(3):
        layer.zero_grad()
        x.grad = None
        layer(x).square().sum().backward()
        runs.append((x.grad.clone(), layer.A.grad.clone(), layer.D.grad.clone()))
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            assert torch.equal(a, b)


def test_pytorch_path_in_chunks_of_rows_computes_the_same(monkeypatch):
    layer = _layer(30, 24, 3, activation="relu", path="fft")
    x = torch.randn(41, 30, dtype=torch.float64)
    g = torch.randn(41, 24, dtype=torch.float64)
    with native_kernels(False):
        whole = _gradients(layer, x, g)
        monkeypatch.setattr(acdc_transform, "CHUNK_BYTES", 7 * 30 * 8)  # chunks of 7 rows
        assert len(acdc_transform._chunks(41, 30, x)) == 6
        for recompute in (True, False):
            layer.recompute = recompute
            _assert_close(_gradients(layer, x, g), whole, tol=1e-12)


def test_the_eager_route_and_the_custom_op_compute_the_same():
    """Plain eager calls skip the custom op's dispatch; under a dispatch mode the op itself runs (and is counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    layer = _layer(24, 20, 3, activation="relu", path="fft")
    g = torch.randn(9, 20, dtype=torch.float64)

    def run():
        layer.zero_grad()
        x = torch.randn(9, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        y = layer(x)
        y.backward(g)
        return y.detach(), x.grad, layer.A.grad.clone(), layer.D.grad.clone()

    eager = run()
    with FlopCounterMode(display=False) as counter:
        through_op = run()
    counted = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert {"structlin.acdc_cascade", "structlin.acdc_cascade_backward"} <= counted
    for a, b in zip(eager, through_op):
        assert torch.equal(a, b)


# --- recomputation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 5, 12])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_recompute_saves_the_input_only(depth, activation, backend):
    """The bar: bytes saved for backward = rows · in_features · 4, whatever the depth (counted with
    saved_tensors_hooks: every saved tensor with a dimension of the batch's rows)."""
    layer = ACDC(200, 256, depth=depth, activation=activation, path="fft")
    x = torch.randn(33, 200, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    activations = sum(t.numel() * t.element_size() for t in saved if t.dim() >= 2 and t.shape[0] == 33)
    assert activations == 33 * 200 * 4 == layer.cost((33,)).saved_bytes
    parameters = sum(t.numel() * t.element_size() for t in saved if not (t.dim() >= 2 and t.shape[0] == 33))
    assert parameters <= 4 * (2 * depth * 256 * 8)  # A, D and the gather tables: nothing of the batch's size
    y.sum().backward()


def test_recompute_and_kept_inputs_give_the_same_gradients(backend):
    kept = _layer(40, 40, 4, activation="relu", recompute=False, path="fft")
    recomputed = _layer(40, 40, 4, activation="relu", recompute=True, path="fft")
    x = torch.randn(19, 40, dtype=torch.float64)
    g = torch.randn(19, 40, dtype=torch.float64)
    _assert_close(_gradients(recomputed, x, g), _gradients(kept, x, g), tol=1e-12)


@pytest.mark.parametrize("recompute", [True, False])
def test_gradcheck_of_the_cascade_op(recompute, backend):
    generator = torch.Generator().manual_seed(3)
    n, k = 8, 3
    x = torch.randn(5, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    A = (1 + 0.3 * torch.randn(k, n, dtype=torch.float64, generator=generator)).requires_grad_(True)
    D = (1 + 0.3 * torch.randn(k, n, dtype=torch.float64, generator=generator)).requires_grad_(True)
    index = torch.tensor([0, 3, -1, 5, 1, -1, 2, 4])
    inverse = torch.tensor([0, 4, 6, 1, 7, 3])
    perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(k - 1)])
    out = torch.tensor([7, 0, 3, 5])
    out_inverse = torch.tensor([1, -1, -1, 2, -1, 3, -1, 0])

    def f(x, A, D):
        return acdc_cascade(x, A, D, gather_in=(index, inverse), permutations=(perms, perms.argsort(1)),
                            gather_out=(out, out_inverse), relu=True, recompute=recompute)

    assert torch.autograd.gradcheck(f, (x, A, D))


# --- the dense path and the planner ------------------------------------------------------------------------------


@pytest.mark.parametrize("in_features, out_features, depth", [(16, 16, 4), (5, 12, 3), (12, 5, 2), (7, 7, 1)])
@pytest.mark.parametrize("recompute", [True, False])
def test_dense_path_is_the_same_function_with_the_same_gradients(in_features, out_features, depth, recompute,
                                                                 backend):
    fft = _layer(in_features, out_features, depth, recompute=recompute, path="fft")
    dense = _layer(in_features, out_features, depth, recompute=recompute, path="dense")
    x = torch.randn(2, 9, in_features, dtype=torch.float64)
    g = torch.randn(2, 9, out_features, dtype=torch.float64)
    _assert_close(_gradients(dense, x, g), _gradients(fft, x, g), tol=1e-12)
    np.testing.assert_allclose(dense(x).detach().numpy(), acdc_scipy_reference(dense, x), rtol=0, atol=1e-10)


def test_gradcheck_of_the_dense_path(backend):
    layer = _layer(6, 5, 3, path="dense")
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    params = {name: p.detach().clone().requires_grad_(True) for name, p in layer.named_parameters()}

    def f(x, A, D, bias):
        return torch.func.functional_call(layer, {"A": A, "D": D, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, params["A"], params["D"], params["bias"]))


def test_dense_path_saves_the_input_only_and_cost_follows_each_path():
    for path in ("dense", "fft"):
        layer = ACDC(24, 32, depth=3, path=path)
        x = torch.randn(40, 24)
        report = structlin.report(layer, x)
        assert report.total == layer.cost((40,)), path
        assert report.total.saved_bytes == 40 * 24 * 4
    dense, fft = ACDC(24, 32, depth=3, path="dense").cost((40,)), ACDC(24, 32, depth=3, path="fft").cost((40,))
    assert dense.forward_flops > 2 * 40 * 24 * 32 and dense != fft


def test_a_layer_pickled_before_the_options_existed_loads_with_the_defaults():
    import pickle

    layer = _layer(8, 8, 2)
    state = layer.__getstate__()
    del state["recompute"], state["path"]
    old = ACDC.__new__(ACDC)
    old.__setstate__(state)
    assert old.recompute is True and old.path == "auto"
    x = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(pickle.loads(pickle.dumps(old))(x), layer(x), rtol=0, atol=0)


def test_a_dense_path_needs_a_linear_cascade():
    with pytest.raises(ValueError, match="path='dense' needs a linear cascade"):
        ACDC(8, 8, activation="relu", path="dense")
    with pytest.raises(ValueError, match="path must be one of 'auto', 'fft', 'dense'"):
        ACDC(8, 8, path="fast")
    assert ACDC(8, 8, activation="relu")._path(10**6, torch.float32, torch.device("cpu"), True) == "fft"


def test_plan_is_deterministic_and_follows_the_sizes():
    cases = [(rows, n, depth, grad) for rows in (1, 128, 2048) for n in (64, 128, 512, 4096)
             for depth in (1, 4, 12) for grad in (True, False)]
    first = [plan(rows, n, n, depth, grad=grad) for rows, n, depth, grad in cases]
    assert first == [plan(rows, n, n, depth, grad=grad) for rows, n, depth, grad in cases]
    assert set(first) == {"fft", "dense"}
    assert plan(2048, 128, 128, 12) == "dense"  # a GEMM of 128² per row beats 12 blocks
    assert plan(2048, 4096, 4096, 12) == "fft"  # the cascade beats a GEMM of 4096² per row
    assert plan(16, 128, 128, 12) == "fft"  # materialising costs 128 rows of cascade: more than the batch
    assert plan(0, 128, 128, 12) == "fft"
    assert plan(2048, 128, 128, 12, dtype=torch.float64) in ("fft", "dense")


@pytest.mark.parametrize("rows", [3, 300])
def test_the_auto_path_is_the_planned_one_and_the_same_function(rows):
    layer = _layer(64, 64, 12)
    x = torch.randn(rows, 64, dtype=torch.float64)
    chosen = plan(rows, 64, 64, 12, dtype=torch.float64)
    forced = _layer(64, 64, 12, path=chosen)
    other = _layer(64, 64, 12, path="fft" if chosen == "dense" else "dense")
    torch.testing.assert_close(layer(x), forced(x), rtol=0, atol=0)
    torch.testing.assert_close(layer(x), other(x), rtol=1e-12, atol=1e-12)


# --- quadratic layers with ACDC branches -------------------------------------------------------------------------


@pytest.mark.parametrize("recompute", [True, False])
def test_quadratic_acdc_branches_inherit_recompute_and_their_cost(recompute):
    torch.manual_seed(0)
    layer = structlin.Quadratic(24, 24, form="xu", branch="acdc", depth=3, recompute=recompute)
    parts = [module for module in layer.modules() if isinstance(module, ACDC)]
    assert parts and all(part.recompute is recompute for part in parts)
    report = structlin.report(layer, torch.randn(10, 24))
    assert report.total == layer.cost((10,))
    cascade_saved = sum(part.cost((10,)).saved_bytes for part in parts)
    assert cascade_saved == len(parts) * 10 * 24 * 4 * (1 if recompute else 3)
    assert isinstance(report.total, Cost)
