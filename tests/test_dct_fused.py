"""The fused native DCT-II/DCT-III along one dimension (``structlin._native.dct_dim``: reorder, real FFT and
twiddles in one pass per chunk of rows, or of positions after the dimension, for power-of-two lengths) and the
n-D reorder through a row table (``dct_reorder_rows``), against scipy in float64 and against the separate passes
they replace."""

import math

import pytest
import scipy.fft
import torch

from structlin import _native
from structlin.transforms import _dct_steps as steps
from structlin.transforms import dct, dctn, idct, idctn, native_kernels

pytestmark = pytest.mark.skipif(not _native.available(), reason="native kernels unavailable")

NORMS = ["backward", "ortho", "forward"]
SCIPY_NORM = {"backward": None, "ortho": "ortho", "forward": "forward"}


def _scipy(direction, x, norm, dim=-1):
    fn = scipy.fft.dct if direction == "dct" else scipy.fft.idct
    return torch.from_numpy(fn(x.double().numpy(), type=2, norm=SCIPY_NORM[norm], axis=dim))


def _shapes(lanes: int):
    """``(n, shape)`` of the inputs transformed along dimension 1: along the last dimension one row and more than
    a chunk of rows (the last chunk partial), every power of two up to 65536; along an inner dimension whole lane
    groups and a partial last one, up to 4096."""
    for bits in range(1, 17):
        n = 1 << bits
        for rows in ((1, lanes + 3) if n <= 4096 else (3,)):
            yield n, (rows, n)
        if n <= 4096:
            for inner in (lanes, 2 * lanes + 3):
                yield n, (2, n, inner)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
@pytest.mark.parametrize("direction", ["dct", "idct"])
def test_every_power_of_two_length_matches_scipy_along_the_last_and_an_inner_dimension(dtype, tol, direction):
    generator = torch.Generator().manual_seed(0)
    for n, shape in _shapes(_native.lanes(dtype)):
        x = torch.randn(*shape, dtype=dtype, generator=generator)
        assert steps._fusable(x, 1) or n > 4096  # a long row with few rows is left to torch's FFT by _fusable
        for norm in NORMS:
            got = steps._fused(x, [1], direction, norm)
            expected = _scipy(direction, x, norm, dim=1)
            scale = expected.abs().max().item()
            torch.testing.assert_close(got.double(), expected, rtol=0, atol=tol * scale * math.log2(n),
                                       msg=f"shape {shape}")


@pytest.mark.parametrize("shape, dims", [((3, 8, 16), (1, 2)), ((16, 32, 32), (0, 1, 2)), ((2, 4, 8, 16), (1, 3)),
                                         ((64, 20), (0,))])
def test_several_dimensions_one_pass_each_match_scipy(shape, dims):
    x = torch.randn(*shape, dtype=torch.float64)
    assert all(steps._fusable(x, d) for d in dims)
    for norm in [None, "ortho", "forward"]:
        expected = torch.from_numpy(scipy.fft.dctn(x.numpy(), axes=dims, norm=norm))
        torch.testing.assert_close(dctn(x, dims, norm), expected, rtol=0, atol=1e-12)
        expected = torch.from_numpy(scipy.fft.idctn(x.numpy(), axes=dims, norm=norm))
        torch.testing.assert_close(idctn(x, dims, norm), expected, rtol=0, atol=1e-12)


def test_the_input_is_left_alone_and_a_non_contiguous_one_is_transformed_in_its_copy():
    x = torch.randn(8, 16, 32)
    kept = x.clone()
    y = dctn(x, (0, 1, 2), None)
    assert torch.equal(x, kept)
    strided = x.transpose(0, 2)
    torch.testing.assert_close(dctn(strided, (0, 1, 2), None), dctn(strided.contiguous(), (0, 1, 2), None),
                               rtol=0, atol=0)
    assert torch.equal(x, kept) and y.is_contiguous()


@pytest.mark.parametrize("n, shape_of", [(8, lambda n: (20, n)), (256, lambda n: (20, n)), (4096, lambda n: (20, n)),
                                         (16384, lambda n: (32, n)), (256, lambda n: (3, n, 40))])
@pytest.mark.parametrize("direction", ["dct", "idct"])
def test_fused_and_separate_passes_agree(n, shape_of, direction, monkeypatch):
    x = torch.randn(*shape_of(n))
    fn = dct if direction == "dct" else idct
    dims = (1,)
    call = (lambda t: fn(t, None)) if x.dim() == 2 else (lambda t: (dctn if direction == "dct" else idctn)(t, dims, None))
    assert steps._fusable(x, 1)
    fused = call(x)
    monkeypatch.setattr(steps, "FUSED_SIZES", range(0))
    assert not steps._fusable(x, 1)
    separate = call(x)
    torch.testing.assert_close(fused, separate, rtol=0, atol=2e-6 * separate.abs().max().item())


def test_which_transforms_run_fused():
    lanes = _native.lanes(torch.float32)
    assert steps._fusable(torch.empty(3, 256), 1)
    assert steps._fusable(torch.empty(2, 5, 1024, dtype=torch.float64), 2)
    assert not steps._fusable(torch.empty(3, 255), 1)  # not a power of two
    assert not steps._fusable(torch.empty(3, 1), 1)
    assert not steps._fusable(torch.empty(3, 1 << 17), 1)  # beyond FUSED_SIZES
    assert not steps._fusable(torch.empty(16, 16384), 1)  # few rows for a long row: one-row FFTs are faster
    assert steps._fusable(torch.empty(32, 16384), 1)
    assert steps._fusable(torch.empty(256, lanes), 0)  # a vector's width of positions after the dimension
    assert not steps._fusable(torch.empty(256, lanes - 1), 0)
    assert steps._fusable(torch.empty(3, 256, 4, math.ceil(lanes / 4)), 1)
    with native_kernels(False):
        assert not steps._fusable(torch.empty(3, 256), 1)


def test_gradients_through_the_fused_passes_are_the_adjoint_transforms():
    x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    cube = torch.randn(8, 8, 8, dtype=torch.float64, requires_grad=True)
    assert steps._fusable(x, 1) and all(steps._fusable(cube, d) for d in (0, 1, 2))
    for norm in [None, "ortho", "forward"]:
        assert torch.autograd.gradcheck(lambda t: dct(t, norm), (x,))
        assert torch.autograd.gradcheck(lambda t: idct(t, norm), (x,))
        assert torch.autograd.gradcheck(lambda t: dctn(t, (0, 1, 2), norm), (cube,))
        assert torch.autograd.gradcheck(lambda t: idctn(t, (0, 2), norm), (cube,))


def test_dct_dim_rejects_what_it_cannot_run_and_works_in_place():
    plan = steps._fused_plan("dct", 8, "ortho", torch.float32)
    ab, tw, br, pos = plan.tensors
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="dct_dim"):
        _native.dct_dim(torch.randn(3, 16), torch.empty(3, 16), plan, 3, 1)  # another length
    with pytest.raises(ValueError, match="dct_dim"):
        _native.dct_dim(x, torch.empty(3, 8), plan, 3, 2)  # shape and sizes disagree
    with pytest.raises(ValueError, match="dct_dim"):
        _native.dct_dim(x.double(), torch.empty(3, 8, dtype=torch.float64), plan, 3, 1)  # another dtype
    with pytest.raises(ValueError, match="dct_dim"):
        _native.dct_dim(x, torch.empty(24), plan, 3, 1)  # another shape
    with pytest.raises(ValueError, match="dct_dim"):
        _native.dct_dim(torch.randn(8, 3).T, torch.empty(3, 8), plan, 3, 1)  # not contiguous
    with pytest.raises(ValueError, match="dct_plan"):
        _native.dct_plan(ab[:-1], tw, br, pos, inverse=False)
    with pytest.raises(ValueError, match="dct_plan"):
        _native.dct_plan(ab, tw, br, torch.full((8,), 8), inverse=False)  # out of range
    with pytest.raises(ValueError, match="dct_plan"):
        _native.dct_plan(ab[:6], tw, br, torch.arange(6), inverse=False)  # not a power of two
    expected = _native.dct_dim(x, torch.empty_like(x), plan, 3, 1)
    assert _native.dct_dim(x, x, plan, 3, 1) is x and torch.equal(x, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["reorder", "unreorder"])
def test_reorder_rows_is_the_row_gather_then_the_reorder_of_each_row(dtype, kind):
    outer, sizes, n = 3, (4, 5), 7
    x = torch.randn(outer, sizes[0] * sizes[1], n, dtype=dtype)
    idx = steps._joint_index(kind, sizes, x.device)
    got = _native.dct_reorder_rows(x, idx, torch.empty_like(x), inverse=kind == "unreorder")
    expected = x.index_select(1, idx).index_select(2, steps._index(kind, n, x.device))
    assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="dct_reorder_rows"):
        _native.dct_reorder_rows(x, torch.full_like(idx, 20), torch.empty_like(x), inverse=False)
    with pytest.raises(ValueError, match="dct_reorder_rows"):
        _native.dct_reorder_rows(x, idx, x, inverse=False)  # in place
    empty = torch.empty(0, *x.shape[1:], dtype=dtype)  # no storage to alias: not mistaken for an in-place call
    assert _native.dct_reorder_rows(empty, idx, torch.empty_like(empty), inverse=False).shape == empty.shape


@pytest.mark.parametrize("shape, dims", [((3, 9, 12), (1, 2)), ((6, 5, 4), (0, 1, 2)), ((2, 9, 6, 4), (1, 2, 3))])
def test_nd_transforms_with_the_one_pass_reorder_match_scipy(shape, dims):
    x = torch.randn(*shape, dtype=torch.float64)  # lengths that are not powers of two: the n-D FFT path
    assert not all(steps._fusable(x, d) for d in dims)
    for norm in [None, "ortho"]:
        expected = torch.from_numpy(scipy.fft.dctn(x.numpy(), axes=dims, norm=norm))
        torch.testing.assert_close(dctn(x, dims, norm), expected, rtol=0, atol=1e-12)
        expected = torch.from_numpy(scipy.fft.idctn(x.numpy(), axes=dims, norm=norm))
        torch.testing.assert_close(idctn(x, dims, norm), expected, rtol=0, atol=1e-12)
