"""``dctn`` / ``idctn``: the DCT-II and its inverse over any set of dimensions, against ``scipy.fft.dctn`` in float64."""

import math

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given
from hypothesis import strategies as st

from structlin.costs import dct_flops, dctn_flops, rfft_flops
from structlin.transforms import dct, dctn, idct, idctn, native_kernels
from structlin.transforms.dctn import normalize_dims

from helpers import assert_compiled_matches_eager

NORMS = [None, "backward", "ortho", "forward"]
# (shape, dim): the last two dims (images), all dims, non-adjacent ones, a middle one alone (the last dim not
# transformed), unsorted and negative names, lengths 1, odd, even and prime
CASES = [
    ((3, 8, 8), (-2, -1)),
    ((2, 5, 7), (1, 2)),
    ((4, 6, 5), None),
    ((2, 3, 4, 5), (1, 3)),
    ((2, 9, 3), (1,)),
    ((7, 4), (0,)),
    ((3, 4, 5), (2, 0)),
    ((2, 1, 6), (-1, -2)),
    ((2, 3, 1), (1, 2)),
    ((3, 16, 13), (-2, -1)),
    ((2, 4, 3, 5, 2), (1, 2, 4)),
    ((5,), 0),
]
case_ids = pytest.mark.parametrize("shape, dim", CASES, ids=[f"{s}-{d}" for s, d in CASES])


def _axes(dim):
    return None if dim is None else ((dim,) if isinstance(dim, int) else tuple(dim))


def _scipy(fn, x, dim, norm):
    return torch.from_numpy(fn(x.detach().double().numpy(), axes=_axes(dim), norm=norm))


@case_ids
@pytest.mark.parametrize("norm", NORMS)
def test_matches_scipy_in_float64(shape, dim, norm, backend):
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(dctn(x, dim, norm), _scipy(scipy.fft.dctn, x, dim, norm), rtol=0, atol=1e-10 * x.numel())
    torch.testing.assert_close(idctn(x, dim, norm), _scipy(scipy.fft.idctn, x, dim, norm), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n1, n2", [(256, 256), (100, 257), (1024, 3)])
def test_large_sizes_match_scipy(n1, n2, backend):
    x = torch.randn(2, n1, n2, dtype=torch.float64)
    for norm in ("ortho", None):
        torch.testing.assert_close(dctn(x, (-2, -1), norm), _scipy(scipy.fft.dctn, x, (1, 2), norm), rtol=0,
                                   atol=1e-12 * x.abs().max().item() * n1 * n2)
    torch.testing.assert_close(idctn(x, (-2, -1)), _scipy(scipy.fft.idctn, x, (1, 2), "ortho"), rtol=0, atol=1e-12)


@case_ids
@pytest.mark.parametrize("norm", NORMS)
def test_round_trip(shape, dim, norm, backend):
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(idctn(dctn(x, dim, norm), dim, norm), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(dctn(idctn(x, dim, norm), dim, norm), x, rtol=0, atol=1e-12)


def _matrix(fn, shape, dim, norm) -> torch.Tensor:
    """The transform of ``shape``-tensors as a ``(numel, numel)`` matrix ``M`` with ``vec(fn(x)) = M vec(x)``."""
    numel = math.prod(shape)
    basis = torch.eye(numel, dtype=torch.float64).reshape(numel, *shape)
    return torch.stack([fn(e, dim, norm).reshape(-1) for e in basis], dim=1)


@pytest.mark.parametrize("shape, dim", [((3, 4), None), ((2, 3, 5), (0, 2)), ((4, 2, 3), (-2,))])
def test_ortho_is_orthogonal_and_idctn_is_its_transpose(shape, dim, backend):
    m = _matrix(dctn, shape, dim, "ortho")
    eye = torch.eye(m.shape[0], dtype=torch.float64)
    torch.testing.assert_close(m @ m.T, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(_matrix(idctn, shape, dim, "ortho"), m.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("fn", [dctn, idctn])
def test_is_the_kronecker_product_of_1d_transforms(fn, norm, backend):
    """Separable: the matrix over dims (0, 2) of a (3, 2, 5) tensor is C₃ ⊗ I₂ ⊗ C₅ (C the 1-D transforms)."""
    one_d = dct if fn is dctn else idct
    c3 = one_d(torch.eye(3, dtype=torch.float64), norm).T.contiguous()
    c5 = one_d(torch.eye(5, dtype=torch.float64), norm).T.contiguous()
    expected = torch.kron(torch.kron(c3, torch.eye(2, dtype=torch.float64)), c5)
    torch.testing.assert_close(_matrix(fn, (3, 2, 5), (0, 2), norm), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fn", [dctn, idctn])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dim", [(-2, -1), (0, 2), (1,), None])
def test_gradcheck_and_gradgradcheck(fn, norm, dim, backend):
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fn(t, dim, norm), (x,))
    assert torch.autograd.gradgradcheck(lambda t: fn(t, dim, norm), (x,))


@pytest.mark.parametrize("fn", [dctn, idctn])
@pytest.mark.parametrize("norm", NORMS)
def test_backward_is_the_explicit_matrix_transpose(fn, norm, backend):
    shape, dim = (3, 4, 5), (0, 2)
    m = _matrix(fn, shape, dim, norm)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape, dtype=torch.float64)
    fn(x, dim, norm).backward(g)
    torch.testing.assert_close(x.grad.reshape(-1), m.T @ g.reshape(-1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("norm", NORMS)
def test_one_dimension_is_dct(norm, backend):
    x = torch.randn(3, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(dctn(x, -1, norm), dct(x, norm), rtol=0, atol=1e-12)
    torch.testing.assert_close(idctn(x, 2, norm), idct(x, norm), rtol=0, atol=1e-12)
    torch.testing.assert_close(dctn(x, 1, norm), dct(x.transpose(1, 2), norm).transpose(1, 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("fn", [dctn, idctn])
def test_non_contiguous_inputs_and_input_untouched(fn, backend):
    base = torch.randn(6, 8, 10, dtype=torch.float64)
    for x in (base.transpose(0, 2), base[:, ::2, 1::3], base[:1].expand(4, 8, 10)):
        before = x.clone()
        for dim in ((-2, -1), (0, 2), None):
            y = fn(x, dim)
            assert y.is_contiguous() and y.shape == x.shape
            torch.testing.assert_close(y, fn(x.contiguous(), dim), rtol=0, atol=1e-12)
        assert torch.equal(x, before)


@pytest.mark.parametrize("fn", [dctn, idctn])
@pytest.mark.parametrize("shape, dim", [((0, 4, 5), (1, 2)), ((3, 0, 5), (0, 2)), ((2, 4, 0), (0, 1))])
def test_empty_untransformed_dimensions(fn, shape, dim, backend):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = fn(x, dim)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fn", [dctn, idctn])
def test_half_inputs_computed_in_float32(fn, dtype, backend):
    x = torch.randn(3, 12, 10).to(dtype)
    y = fn(x, (-2, -1))
    assert y.dtype == dtype
    torch.testing.assert_close(y, fn(x.float(), (-2, -1)).to(dtype), rtol=0, atol=0)
    x.requires_grad_(True)
    fn(x, (0, 2)).float().sum().backward()
    assert x.grad.dtype == dtype


def test_float32_accuracy(backend):
    x = torch.randn(4, 256, 256, dtype=torch.float64)
    for fn in (dctn, idctn):
        err = (fn(x.float(), (-2, -1)).double() - fn(x, (-2, -1))).abs().max().item()
        assert err < 1e-5 * x.abs().max().item()


def test_native_and_torch_paths_agree():
    x = torch.randn(4, 64, 100)
    with native_kernels(False):
        expected = dctn(x, (-2, -1), None), idctn(x, (0, 2))
    torch.testing.assert_close(dctn(x, (-2, -1), None), expected[0], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(idctn(x, (0, 2)), expected[1], rtol=1e-5, atol=1e-5)


def test_no_dimensions_is_a_copy():
    x = torch.randn(3, 4)
    for fn in (dctn, idctn):
        y = fn(x, ())
        assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()


@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    data=st.data(),
    norm=st.sampled_from(NORMS),
    inverse=st.booleans(),
)
def test_hypothesis_shapes_and_dims_match_scipy(shape, data, norm, inverse):
    dims = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    x = torch.randn(*shape, dtype=torch.float64)
    fn, ref = (idctn, scipy.fft.idctn) if inverse else (dctn, scipy.fft.dctn)
    torch.testing.assert_close(fn(x, dims, norm), _scipy(ref, x, dims, norm), rtol=0, atol=1e-10 * x.numel())


@pytest.mark.parametrize(
    "x, dim, error, message",
    [
        (torch.ones(3, 4), 2, IndexError, r"dimension 2 is out of range .* \[-2, 1\]"),
        (torch.ones(3, 4), (-3,), IndexError, "out of range"),
        (torch.ones(3, 4), (0, -2), ValueError, "more than once"),
        (torch.ones(3, 4), 1.5, TypeError, "int or a sequence of ints"),
        (torch.ones(3, 4), ("a",), TypeError, "int or a sequence of ints"),
        (torch.ones(3, 4), True, TypeError, "int or a sequence of ints"),
        (torch.ones(3, 0), (0, 1), ValueError, "length 0 in dimension 1"),
        (torch.tensor(1.0), None, ValueError, "at least 1 dimension"),
        (torch.ones(3, 4, dtype=torch.int64), None, TypeError, "floating-point"),
        (torch.ones(3, 4, dtype=torch.complex64), None, TypeError, "complex64"),
        ([[1.0, 2.0]], None, TypeError, "torch.Tensor"),
    ],
)
@pytest.mark.parametrize("fn", [dctn, idctn])
def test_bad_inputs_raise_clear_errors(fn, x, dim, error, message):
    with pytest.raises(error, match=message):
        fn(x, dim)


@pytest.mark.parametrize("fn", [dctn, idctn])
def test_unknown_norm_lists_the_valid_ones(fn):
    with pytest.raises(ValueError, match="'ortho'"):
        fn(torch.ones(2, 4), norm="orthonormal")
    with pytest.raises(ValueError, match="'ortho'"):
        fn(torch.ones(2, 4), norm="dual-backward")  # internal names are not public


def test_normalize_dims():
    assert normalize_dims(4, None, "f") == [0, 1, 2, 3]
    assert normalize_dims(4, -1, "f") == [3]
    assert normalize_dims(4, (3, -4, 1), "f") == [0, 1, 3]
    assert normalize_dims(3, np.int64(1), "f") == [1]
    assert normalize_dims(3, [], "f") == []


@pytest.mark.parametrize("dim", [(-2, -1), (0, 2), (1,)])
def test_flop_counter_counts_the_documented_formula(dim):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(6, 20, 12, requires_grad=True)
    dims = normalize_dims(3, dim, "test")
    sizes = [x.shape[d] for d in dims]
    expected = x.numel() // math.prod(sizes) * dctn_flops(sizes)
    with FlopCounterMode(display=False) as counter:
        y = dctn(x, dim, None)
    assert counter.get_total_flops() == expected
    with FlopCounterMode(display=False) as counter:
        y.backward(torch.ones_like(y))
    assert counter.get_total_flops() == expected
    with FlopCounterMode(display=False) as counter:
        idctn(x.detach(), dim)
    assert counter.get_total_flops() == expected
    counts = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert counts == {"structlin.idctn"}


def test_dctn_flops_formula():
    assert dctn_flops([1000]) == dct_flops(1000)
    assert dctn_flops([64, 100]) == rfft_flops(6400) + 14 * 64 * 51 + 3 * 6400
    assert dctn_flops([4, 5, 6]) == rfft_flops(120) + 2 * 14 * 20 * 4 + 3 * 120
    with pytest.raises(ValueError):
        dctn_flops([4, 0])


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["aot_eager", "inductor"])
def test_compiled_forward_and_backward_equal_eager(backend_name, backend):
    def pipeline(x):
        y = dctn(x, (-2, -1), None)
        return idctn(torch.sin(y), (0, 2)) + dctn(x, 1, "forward")

    x = torch.randn(3, 6, 10, dtype=torch.float64, requires_grad=True)
    assert_compiled_matches_eager(pipeline, x, backend=backend_name)


@pytest.mark.parametrize("fn", [dctn, idctn])
def test_on_device(fn, device):
    x = torch.randn(3, 7, 10, dtype=torch.float64)
    for dim in ((-2, -1), (0, 2), (1,)):
        torch.testing.assert_close(fn(x.to(device), dim).cpu(), fn(x, dim), rtol=0, atol=1e-10)


def test_adjacent_dimensions_reordered_together_or_one_by_one_agree(monkeypatch, backend):
    """Runs of adjacent dimensions are reordered with one gather over their flattened product, up to a size;
    beyond it one dimension at a time. Both give scipy's transform."""
    from structlin.transforms import _dct_steps

    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    expected = [_scipy(fn, x, (0, 1, 2), "ortho") for fn in (scipy.fft.dctn, scipy.fft.idctn)]
    for joint_max in (_dct_steps._JOINT_MAX, 4):
        monkeypatch.setattr(_dct_steps, "_JOINT_MAX", joint_max)
        torch.testing.assert_close(dctn(x, (0, 1, 2)), expected[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(idctn(x, (0, 1, 2)), expected[1], rtol=0, atol=1e-12)
