"""The fused native DCT-II/DCT-III of rows (``structlin._native.dct_rows``: reorder, real FFT and twiddles in one
pass per chunk of rows, for power-of-two lengths) and the n-D reorder through a row table
(``dct_reorder_rows``), against scipy in float64 and against the separate passes they replace."""

import pytest
import scipy.fft
import torch

from structlin import _native
from structlin.transforms import _dct_steps as steps
from structlin.transforms import dct, dctn, idct, idctn, native_kernels

pytestmark = pytest.mark.skipif(not _native.available(), reason="native kernels unavailable")

NORMS = ["backward", "ortho", "forward"]
SCIPY_NORM = {"backward": None, "ortho": "ortho", "forward": "forward"}


def _scipy(direction, x, norm):
    fn = scipy.fft.dct if direction == "dct" else scipy.fft.idct
    return torch.from_numpy(fn(x.double().numpy(), type=2, norm=SCIPY_NORM[norm], axis=-1))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
@pytest.mark.parametrize("direction", ["dct", "idct"])
def test_every_power_of_two_length_matches_scipy(dtype, tol, direction):
    lanes = _native.lanes(dtype)
    generator = torch.Generator().manual_seed(0)
    for bits in range(1, 17):
        n = 1 << bits
        for rows in ((1, lanes + 3) if n <= 4096 else (3,)):  # one row; more than a chunk, the last one partial
            x = torch.randn(rows, n, dtype=dtype, generator=generator)
            for norm in NORMS:
                got = steps._fused_rows(x, direction, norm)
                expected = _scipy(direction, x, norm)
                scale = expected.abs().max().item()
                torch.testing.assert_close(got.double(), expected, rtol=0, atol=tol * scale * bits, msg=f"n={n}")


@pytest.mark.parametrize("n", [2, 8, 256, 4096, 16384])
@pytest.mark.parametrize("direction", ["dct", "idct"])
def test_fused_and_separate_passes_agree(n, direction, monkeypatch):
    rows = max(20, n // steps.FUSED_ROWS_DIVISOR)
    x = torch.randn(rows, n)
    fn = dct if direction == "dct" else idct
    assert steps._fused(x, [1])
    fused = fn(x, None)
    monkeypatch.setattr(steps, "FUSED_SIZES", range(0))
    assert not steps._fused(x, [1])
    separate = fn(x, None)
    torch.testing.assert_close(fused, separate, rtol=0, atol=2e-6 * separate.abs().max().item())


def test_which_transforms_run_fused():
    assert steps._fused(torch.empty(3, 256), [1])
    assert steps._fused(torch.empty(2, 5, 1024, dtype=torch.float64), [2])
    assert not steps._fused(torch.empty(3, 255), [1])  # not a power of two
    assert not steps._fused(torch.empty(3, 1), [1])
    assert not steps._fused(torch.empty(256, 3), [0])  # not the last dimension
    assert not steps._fused(torch.empty(8, 256), [0, 1])  # several dimensions
    assert not steps._fused(torch.empty(3, 1 << 17), [1])  # beyond FUSED_SIZES
    assert not steps._fused(torch.empty(16, 16384), [1])  # few rows for a long row: one-row FFTs are faster
    assert steps._fused(torch.empty(32, 16384), [1])
    with native_kernels(False):
        assert not steps._fused(torch.empty(3, 256), [1])


def test_gradients_through_the_fused_path_are_the_adjoint_transforms():
    x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    assert steps._fused(x, [1])
    for norm in [None, "ortho", "forward"]:
        assert torch.autograd.gradcheck(lambda t: dct(t, norm), (x,))
        assert torch.autograd.gradcheck(lambda t: idct(t, norm), (x,))


def test_dct_rows_rejects_what_it_cannot_run():
    plan = steps._fused_plan("dct", 8, "ortho", torch.float32)
    ab, tw, br, pos = plan.tensors
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="dct_rows"):
        _native.dct_rows(torch.randn(3, 16), torch.empty(3, 16), plan)  # another length
    with pytest.raises(ValueError, match="dct_rows"):
        _native.dct_rows(x, x, plan)  # in place
    with pytest.raises(ValueError, match="dct_rows"):
        _native.dct_rows(x.double(), torch.empty(3, 8, dtype=torch.float64), plan)  # another dtype
    with pytest.raises(ValueError, match="dct_rows"):
        _native.dct_rows(x.T.contiguous().T, torch.empty(3, 8), plan)  # not contiguous
    with pytest.raises(ValueError, match="dct_plan"):
        _native.dct_plan(ab[:-1], tw, br, pos, inverse=False)
    with pytest.raises(ValueError, match="dct_plan"):
        _native.dct_plan(ab, tw, br, torch.full((8,), 8), inverse=False)  # out of range
    with pytest.raises(ValueError, match="dct_plan"):
        _native.dct_plan(ab[:6], tw, br, torch.arange(6), inverse=False)  # not a power of two


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


@pytest.mark.parametrize("shape, dims", [((3, 8, 16), (1, 2)), ((6, 5, 4), (0, 1, 2)), ((2, 9, 8, 4), (1, 2, 3))])
def test_nd_transforms_with_the_one_pass_reorder_match_scipy(shape, dims):
    x = torch.randn(*shape, dtype=torch.float64)
    for norm in [None, "ortho"]:
        expected = torch.from_numpy(scipy.fft.dctn(x.numpy(), axes=dims, norm=norm))
        torch.testing.assert_close(dctn(x, dims, norm), expected, rtol=0, atol=1e-12)
        expected = torch.from_numpy(scipy.fft.idctn(x.numpy(), axes=dims, norm=norm))
        torch.testing.assert_close(idctn(x, dims, norm), expected, rtol=0, atol=1e-12)
