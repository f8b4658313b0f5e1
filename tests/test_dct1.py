"""``dct1`` / ``idct1``: the DCT-I and its inverse, against ``scipy.fft.dct(type=1)`` in float64 (one implementation,
PyTorch ops only: no native kernel to compare with)."""

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given
from hypothesis import strategies as st

from structlin.costs import dct1_flops, rfft_flops
from structlin.transforms import dct1, idct1

from helpers import assert_compiled_matches_eager

NORMS = [None, "backward", "ortho", "forward"]
LENGTHS = [2, 3, 4, 5, 8, 9, 17, 32, 100, 111, 255, 256, 257, 1024, 1025]


def _scipy(fn, x, norm):
    return torch.from_numpy(fn(x.detach().double().numpy(), type=1, norm=norm, axis=-1))


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("norm", NORMS)
def test_matches_scipy_in_float64(n, norm):
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(dct1(x, norm), _scipy(scipy.fft.dct, x, norm), rtol=0, atol=1e-11 * n)
    torch.testing.assert_close(idct1(x, norm), _scipy(scipy.fft.idct, x, norm), rtol=0, atol=1e-11 * n)


def _matrix(fn, n, norm) -> torch.Tensor:
    return fn(torch.eye(n, dtype=torch.float64), norm).T  # column j: the transform of e_j


@pytest.mark.parametrize("n", [2, 3, 6, 9])
def test_ortho_is_orthogonal_symmetric_and_its_own_inverse(n):
    m = _matrix(dct1, n, "ortho")
    torch.testing.assert_close(m @ m.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(m, m.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(_matrix(idct1, n, "ortho"), m, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [2, 7, 64])
@pytest.mark.parametrize("norm", NORMS)
def test_round_trip(n, norm):
    x = torch.randn(4, n, dtype=torch.float64)
    torch.testing.assert_close(idct1(dct1(x, norm), norm), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(dct1(idct1(x, norm), norm), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [5, 8])
def test_unnormalized_inverse_is_the_transform_over_2_n_minus_1(n):
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(idct1(x, None), dct1(x, None) / (2 * (n - 1)), rtol=0, atol=1e-12)
    torch.testing.assert_close(idct1(x, "forward"), dct1(x, None), rtol=0, atol=1e-12)


@pytest.mark.parametrize("fn", [dct1, idct1])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("n", [2, 3, 8])
def test_gradcheck_and_gradgradcheck(fn, norm, n):
    x = torch.randn(2, 3, n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fn(t, norm), (x,))
    assert torch.autograd.gradgradcheck(lambda t: fn(t, norm), (x,))


@pytest.mark.parametrize("fn", [dct1, idct1])
@pytest.mark.parametrize("norm", NORMS)
def test_backward_is_the_explicit_matrix_transpose(fn, norm):
    n = 11
    m = _matrix(fn, n, norm)  # y = m @ x
    x = torch.randn(3, n, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, n, dtype=torch.float64)
    fn(x, norm).backward(g)
    torch.testing.assert_close(x.grad, g @ m, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fn", [dct1, idct1])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 7), (0, 7), (3, 0, 7), (1, 1, 1, 2)])
def test_any_leading_shape_including_empty(fn, shape):
    x = torch.randn(shape, dtype=torch.float64)
    y = fn(x)
    assert y.shape == x.shape and y.is_contiguous()
    if x.numel():
        torch.testing.assert_close(y, _scipy(getattr(scipy.fft, fn.__name__[:-1]), x, "ortho"), rtol=0, atol=1e-10)


@pytest.mark.parametrize("fn", [dct1, idct1])
def test_non_contiguous_inputs_and_input_untouched(fn):
    base = torch.randn(9, 8, dtype=torch.float64)
    for x in (base.T, base[:, ::2], base[:1].expand(5, 8)):
        before = x.clone()
        for norm in ("ortho", None):
            torch.testing.assert_close(fn(x, norm), fn(x.contiguous(), norm), rtol=0, atol=1e-12)
        assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fn", [dct1, idct1])
def test_half_inputs_computed_in_float32(fn, dtype):
    x = torch.randn(4, 33).to(dtype)
    y = fn(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, fn(x.float()).to(dtype), rtol=0, atol=0)
    x.requires_grad_(True)
    fn(x).float().sum().backward()
    assert x.grad.dtype == dtype


def test_float32_accuracy():
    x = torch.randn(8, 4097, dtype=torch.float64)
    assert (dct1(x.float()).double() - dct1(x)).abs().max() < 1e-5


@given(
    lead=st.lists(st.integers(0, 3), max_size=3),
    n=st.integers(2, 300),
    norm=st.sampled_from(NORMS),
    inverse=st.booleans(),
)
def test_hypothesis_shapes_match_scipy(lead, n, norm, inverse):
    x = torch.randn(*lead, n, dtype=torch.float64)
    fn, ref = (idct1, scipy.fft.idct) if inverse else (dct1, scipy.fft.dct)
    torch.testing.assert_close(fn(x, norm), _scipy(ref, x, norm), rtol=0, atol=1e-11 * n)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.ones(3, 1), ValueError, "length >= 2"),
        (torch.ones(3, 0), ValueError, "length >= 1"),
        (torch.arange(8), TypeError, "floating-point"),
        (torch.ones(8, dtype=torch.complex128), TypeError, "complex128"),
        (torch.tensor(1.0), ValueError, "at least 1 dimension"),
        ([1.0, 2.0], TypeError, "torch.Tensor"),
    ],
)
@pytest.mark.parametrize("fn", [dct1, idct1])
def test_bad_inputs_raise_clear_errors(fn, bad, error, message):
    with pytest.raises(error, match=message):
        fn(bad)


@pytest.mark.parametrize("fn", [dct1, idct1])
def test_unknown_norm_lists_the_valid_ones(fn):
    with pytest.raises(ValueError, match="'ortho'"):
        fn(torch.ones(4), norm="orthogonal")


@pytest.mark.parametrize("norm, ends", [(None, False), ("forward", False), ("ortho", True)])
def test_flop_counter_counts_the_documented_formula(norm, ends):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 3, 1000, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        y = dct1(x, norm)
    assert counter.get_total_flops() == 6 * dct1_flops(1000, ends)
    with FlopCounterMode(display=False) as counter:
        y.backward(torch.ones_like(y))  # the adjoint: ends scaled unless the transform is a multiple of T
    assert counter.get_total_flops() == 6 * dct1_flops(1000, True)
    with FlopCounterMode(display=False) as counter:
        idct1(x.detach(), norm)
    assert counter.get_total_flops() == 6 * dct1_flops(1000, ends)
    assert {str(op) for op in counter.get_flop_counts()["Global"]} == {"structlin.dct1"}


def test_dct1_flops_formula():
    assert dct1_flops(1025) == rfft_flops(2048) + 1025
    assert dct1_flops(2, True) == rfft_flops(2) + 4
    with pytest.raises(ValueError):
        dct1_flops(1)


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["aot_eager", "inductor"])
def test_compiled_forward_and_backward_equal_eager(backend_name):
    def pipeline(x):
        return idct1(torch.sin(dct1(x, None)), "ortho") + dct1(x, "forward")

    x = torch.randn(4, 33, dtype=torch.float64, requires_grad=True)
    assert_compiled_matches_eager(pipeline, x, backend=backend_name)


@pytest.mark.parametrize("fn", [dct1, idct1])
def test_on_device(fn, device):
    x = torch.randn(3, 37, dtype=torch.float64)
    torch.testing.assert_close(fn(x.to(device)).cpu(), fn(x), rtol=0, atol=1e-10)


def test_matches_numpy_definition():
    """The sum in the module docstring, evaluated directly."""
    n = 6
    x = np.random.default_rng(0).standard_normal(n)
    j, k = np.arange(n), np.arange(n)[:, None]
    weights = np.where((j == 0) | (j == n - 1), 1.0, 2.0)
    expected = (weights * x * np.cos(np.pi * j * k / (n - 1))).sum(axis=1)
    torch.testing.assert_close(dct1(torch.from_numpy(x), None), torch.from_numpy(expected), rtol=0, atol=1e-12)
