import math

import pytest
import scipy.fft
import torch
import torch_dct
from hypothesis import given
from hypothesis import strategies as st

from structlin.costs import dct_flops, idct_flops
from structlin.transforms import dct, idct

NORMS = [None, "backward", "ortho", "forward"]
LENGTHS = [1, 2, 3, 4, 5, 7, 8, 16, 17, 31, 64, 100, 127, 255, 256, 1000, 1024, 4096]


def _scipy(fn, x, norm):
    return torch.from_numpy(fn(x.detach().cpu().double().numpy(), type=2, norm=norm, axis=-1))


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("norm", NORMS)
def test_dct_and_idct_match_scipy_in_float64(n, norm, backend):
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(dct(x, norm), _scipy(scipy.fft.dct, x, norm), rtol=0, atol=1e-10 * max(1, n))
    torch.testing.assert_close(idct(x, norm), _scipy(scipy.fft.idct, x, norm), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 100, 512])
def test_default_norm_is_ortho_and_matches_torch_dct(n, backend):
    x = torch.randn(4, n, dtype=torch.float64)
    torch.testing.assert_close(dct(x), torch_dct.dct(x, norm="ortho"), rtol=0, atol=1e-10)
    torch.testing.assert_close(idct(x), torch_dct.idct(x, norm="ortho"), rtol=0, atol=1e-10)
    torch.testing.assert_close(dct(x, None), torch_dct.dct(x), rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", [1, 6, 9, 64])
@pytest.mark.parametrize("norm", NORMS)
def test_round_trip_and_orthogonality(n, norm, backend):
    x = torch.randn(5, n, dtype=torch.float64)
    torch.testing.assert_close(idct(dct(x, norm), norm), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(dct(idct(x, norm), norm), x, rtol=0, atol=1e-12)
    if norm == "ortho":
        eye = torch.eye(n, dtype=torch.float64)
        matrix = dct(eye).T  # column j is the transform of e_j
        torch.testing.assert_close(matrix @ matrix.T, eye, rtol=0, atol=1e-12)
        torch.testing.assert_close(idct(eye).T, matrix.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fn", [dct, idct])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n", [1, 2, 7, 8])
def test_gradcheck_and_gradgradcheck(fn, norm, n, backend):
    x = torch.randn(2, 3, n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fn(t, norm), (x,))
    assert torch.autograd.gradgradcheck(lambda t: fn(t, norm), (x,))


@pytest.mark.parametrize("fn", [dct, idct])
def test_backward_is_the_explicit_matrix_transpose(fn, backend):
    n = 12
    x = torch.randn(3, n, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, n, dtype=torch.float64)
    matrix = fn(torch.eye(n, dtype=torch.float64), None).T  # y = matrix @ x
    fn(x, None).backward(g)
    torch.testing.assert_close(x.grad, g @ matrix, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fn", [dct, idct])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 7), (0, 7), (3, 0, 7), (1, 1, 1, 7)])
def test_any_leading_shape_including_empty(fn, shape, backend):
    x = torch.randn(shape, dtype=torch.float64)
    y = fn(x)
    assert y.shape == x.shape and y.is_contiguous()
    if x.numel():
        torch.testing.assert_close(y, _scipy(getattr(scipy.fft, fn.__name__), x, "ortho"), rtol=0, atol=1e-10)


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}-thread")
def threads(request):
    """Run the test with 1 and with 2 torch threads, whatever ``OMP_NUM_THREADS`` says: how the FFT splits and
    orders its sums may depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _fft_rounding(x: torch.Tensor) -> float:
    """How far two float64 FFT-based transforms of ``x``'s rows that add in different orders may drift apart:
    a few ulps per butterfly stage, relative to the largest row's norm (the transform is orthogonal)."""
    stages = max(1, math.ceil(math.log2(x.shape[-1])))
    return 10 * torch.finfo(x.dtype).eps * stages * x.norm(dim=-1).max().item()


@pytest.mark.parametrize("fn", [dct, idct])
def test_non_contiguous_and_expanded_inputs(fn, backend, threads):
    """The native path copies the rows into a contiguous buffer before anything else, so it is bit-identical for
    any layout. The PyTorch path hands strided data to the FFT, which may then sum in another order (it does for
    the transposed input with one thread): equal up to rounding."""
    base = torch.randn(9, 8, dtype=torch.float64)
    for x in (base.T, base[:, ::2], base[:1].expand(5, 8)):
        atol = 0.0 if backend == "native" else _fft_rounding(x)
        torch.testing.assert_close(fn(x), fn(x.contiguous()), rtol=0, atol=atol)


@pytest.mark.parametrize("fn", [dct, idct])
def test_does_not_modify_its_input(fn, backend):
    x = torch.randn(4, 10)
    before = x.clone()
    fn(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fn", [dct, idct])
def test_half_inputs_computed_in_float32(fn, dtype, backend):
    x = torch.randn(4, 33).to(dtype)
    y = fn(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, fn(x.float()).to(dtype), rtol=0, atol=0)
    x.requires_grad_(True)
    fn(x).float().sum().backward()
    assert x.grad.dtype == dtype


def test_float32_accuracy(backend):
    x = torch.randn(8, 4096, dtype=torch.float64)
    y = dct(x.float()).double()
    assert (y - dct(x)).abs().max() < 1e-5


@given(
    lead=st.lists(st.integers(0, 3), max_size=3),
    n=st.integers(1, 300),
    norm=st.sampled_from(NORMS),
    inverse=st.booleans(),
)
def test_hypothesis_shapes_match_scipy(lead, n, norm, inverse):
    x = torch.randn(*lead, n, dtype=torch.float64)
    fn, ref = (idct, scipy.fft.idct) if inverse else (dct, scipy.fft.dct)
    torch.testing.assert_close(fn(x, norm), _scipy(ref, x, norm), rtol=0, atol=1e-10 * max(1, n))


def test_native_and_torch_paths_agree():
    from structlin.transforms import native_kernels

    x = torch.randn(16, 1000)
    with native_kernels(False):
        expected = dct(x), idct(x)
    torch.testing.assert_close(dct(x), expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(idct(x), expected[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", [dct, idct])
def test_on_device(fn, device):
    x = torch.randn(3, 37, dtype=torch.float64)
    torch.testing.assert_close(fn(x.to(device)).cpu(), fn(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.arange(8), TypeError, "floating-point"),
        (torch.ones(8, dtype=torch.bool), TypeError, "floating-point"),
        (torch.ones(8, dtype=torch.complex64), TypeError, "torch.complex64"),
        (torch.tensor(1.0), ValueError, "at least 1 dimension"),
        (torch.ones(3, 0), ValueError, "length >= 1"),
        ([1.0, 2.0], TypeError, "torch.Tensor"),
    ],
)
@pytest.mark.parametrize("fn", [dct, idct])
def test_bad_inputs_raise_clear_errors(fn, bad, error, message):
    with pytest.raises(error, match=message):
        fn(bad)


def test_unknown_norm_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'ortho'"):
        dct(torch.ones(4), norm="orthonormal")


@pytest.mark.parametrize("norm", ["ortho", None])
def test_flop_counter_counts_the_documented_formulas(norm):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 3, 1000, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        y = dct(x, norm)
    assert counter.get_total_flops() == 6 * dct_flops(1000)
    with FlopCounterMode(display=False) as counter:
        y.backward(torch.ones_like(y))  # the adjoint of a DCT-II is an (ortho) DCT-III
    assert counter.get_total_flops() == 6 * idct_flops(1000)
    with FlopCounterMode(display=False) as counter:
        idct(x.detach(), norm)
    assert counter.get_total_flops() == 6 * idct_flops(1000)


def test_dct_flops_formula():
    assert dct_flops(4096) == round(2.5 * 4096 * 12) + 3 * 4096
    assert dct_flops(1) == 3
    assert idct_flops(1024) == dct_flops(1024)
