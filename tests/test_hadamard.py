import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st

from structlin.costs import fwht_flops
import torch.nn.functional as F

from structlin.transforms import fwht, fwht_butterfly, native_kernels, next_power_of_2
from structlin.transforms.hadamard import _factor_log2s

SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 2048, 4096]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("normalized", [True, False])
def test_matches_scipy_hadamard_in_float64(n, normalized, backend):
    x = torch.randn(3, n, dtype=torch.float64)
    h = torch.from_numpy(scipy.linalg.hadamard(n).astype(np.float64))
    expected = x @ h / (math.sqrt(n) if normalized else 1.0)
    torch.testing.assert_close(fwht(x, normalized), expected, rtol=0, atol=1e-10 * math.sqrt(n))


@pytest.mark.parametrize("n", [2**13, 2**14, 2**16])
def test_large_sizes_match_the_butterfly_reference(n, backend):
    x = torch.randn(2, n, dtype=torch.float64)
    torch.testing.assert_close(fwht(x), fwht_butterfly(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [1, 8, 512])
def test_butterfly_reference_matches_scipy(n):
    x = torch.randn(2, n, dtype=torch.float64)
    h = torch.from_numpy(scipy.linalg.hadamard(n).astype(np.float64))
    torch.testing.assert_close(fwht_butterfly(x, normalized=False), x @ h, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [16, 1024])
def test_normalized_transform_is_its_own_inverse(n, backend):
    x = torch.randn(4, n, dtype=torch.float64)
    torch.testing.assert_close(fwht(fwht(x)), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("n", [1, 2, 8, 32])
def test_gradcheck_and_gradgradcheck(n, normalized, backend):
    x = torch.randn(2, 3, n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fwht(t, normalized), (x,))
    assert torch.autograd.gradgradcheck(lambda t: fwht(t, normalized), (x,))


@pytest.mark.parametrize("shape", [(8,), (2, 3, 8), (0, 8), (2, 0, 8)])
def test_any_leading_shape_including_empty(shape, backend):
    x = torch.randn(shape, dtype=torch.float64)
    y = fwht(x)
    assert y.shape == x.shape and y.is_contiguous()
    if x.numel():
        torch.testing.assert_close(y, fwht_butterfly(x), rtol=0, atol=1e-12)


def _matmul_rounding(x: torch.Tensor) -> float:
    """How far two float64 evaluations of ``x @ H`` (entries ±1, times 1/√n) that add in different orders may
    drift apart: a sum of n terms in any order is within (n - 1)·ε·Σ|terms| of the exact one, so twice that."""
    n = x.shape[-1]
    return 2 * n * torch.finfo(x.dtype).eps * x.abs().sum(dim=-1).max().item() / math.sqrt(n)


def test_non_contiguous_inputs_and_input_untouched(backend):
    """The native kernel copies the rows into a contiguous buffer and runs fixed butterflies: bit-identical for
    any layout. The PyTorch path multiplies by Hadamard factors, and a matmul's order of summation may depend on
    the layout and the thread count: equal up to rounding."""
    base = torch.randn(16, 16, dtype=torch.float64)
    for x in (base.T, base[::2], base[:1].expand(3, 16)):
        before = x.clone()
        atol = 0.0 if backend == "native" else _matmul_rounding(x)
        torch.testing.assert_close(fwht(x), fwht(x.contiguous()), rtol=0, atol=atol)
        assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_float32(dtype, backend):
    x = torch.randn(4, 64).to(dtype)
    y = fwht(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, fwht(x.float()).to(dtype), rtol=0, atol=0)


def test_native_and_kronecker_paths_agree_in_float32():
    x = torch.randn(32, 4096)
    with native_kernels(False):
        expected = fwht(x)
    torch.testing.assert_close(fwht(x), expected, rtol=1e-5, atol=1e-5)


@given(lead=st.lists(st.integers(0, 3), max_size=3), log2n=st.integers(0, 12), normalized=st.booleans())
def test_hypothesis_shapes_match_butterfly(lead, log2n, normalized):
    x = torch.randn(*lead, 2**log2n, dtype=torch.float64)
    torch.testing.assert_close(fwht(x, normalized), fwht_butterfly(x, normalized), rtol=0, atol=1e-10)


@pytest.mark.parametrize("log2n", range(0, 25))
def test_kronecker_factors_multiply_to_n(log2n):
    factors = _factor_log2s(log2n)
    assert sum(factors) == log2n and max(factors) - min(factors) <= 1


def test_on_device(device):
    x = torch.randn(3, 256, dtype=torch.float64)
    torch.testing.assert_close(fwht(x.to(device)).cpu(), fwht(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n, nearest", [(3, "2 and 4"), (100, "64 and 128"), (1000, "512 and 1024")])
def test_non_power_of_two_names_length_and_nearest_sizes(n, nearest):
    with pytest.raises(ValueError, match=f"got length {n}; the nearest valid lengths are {nearest}"):
        fwht(torch.ones(2, n))


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.ones(8, dtype=torch.int32), TypeError, "floating-point"),
        (torch.tensor(2.0), ValueError, "at least 1 dimension"),
        (torch.ones(2, 0), ValueError, "length >= 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad, error, message):
    with pytest.raises(error, match=message):
        fwht(bad)


@pytest.mark.parametrize("normalized", [True, False])
def test_flop_counter_counts_the_documented_formula(normalized):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(5, 1024, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        fwht(x, normalized).sum().backward()
    assert counter.get_total_flops() == 2 * 5 * fwht_flops(1024, normalized)
    assert fwht_flops(1024, normalized) == 1024 * 10 + (1024 if normalized else 0)


@pytest.mark.parametrize("n", [1, 3, 5, 7, 100, 1000, 1025])
@pytest.mark.parametrize("normalized", [True, False])
def test_pad_zero_pads_to_the_next_power_of_two(n, normalized, backend):
    x = torch.randn(3, n, dtype=torch.float64)
    size = next_power_of_2(n)
    h = torch.from_numpy(scipy.linalg.hadamard(size).astype(np.float64)) / (math.sqrt(size) if normalized else 1.0)
    y = fwht(x, normalized, pad=True)
    assert y.shape == (3, size) and y.is_contiguous()
    torch.testing.assert_close(y, F.pad(x, (0, size - n)) @ h, rtol=0, atol=1e-10 * math.sqrt(size))


@pytest.mark.parametrize("n", [1, 8, 64])
def test_pad_leaves_powers_of_two_alone(n, backend):
    x = torch.randn(2, n, dtype=torch.float64)
    torch.testing.assert_close(fwht(x, pad=True), fwht(x), rtol=0, atol=0)


def test_pad_gradient_reaches_the_input_only(backend):
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fwht(t, pad=True), (x,))
    assert torch.autograd.gradgradcheck(lambda t: fwht(t, normalized=False, pad=True), (x,))
    g = torch.randn(2, 3, 8, dtype=torch.float64)
    fwht(x, pad=True).backward(g)
    assert x.grad.shape == x.shape
    torch.testing.assert_close(x.grad, fwht(g)[..., :5], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pad_keeps_half_dtypes(dtype):
    x = torch.randn(4, 5).to(dtype)
    y = fwht(x, pad=True)
    assert y.dtype == dtype and y.shape == (4, 8)
    torch.testing.assert_close(y, fwht(F.pad(x.float(), (0, 3))).to(dtype), rtol=0, atol=0)


def test_without_pad_a_bad_length_is_still_a_value_error():
    with pytest.raises(ValueError, match="got length 5; the nearest valid lengths are 4 and 8"):
        fwht(torch.ones(2, 5), pad=False)


@pytest.mark.parametrize("n, expected", [(0, 1), (1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (1000, 1024),
                                         (2**40 + 1, 2**41), (np.int64(100), 128)])
def test_next_power_of_2(n, expected):
    assert next_power_of_2(n) == expected and isinstance(next_power_of_2(n), int)


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (2.0, TypeError), ("8", TypeError), (True, TypeError)])
def test_next_power_of_2_rejects_bad_input(bad, error):
    with pytest.raises(error):
        next_power_of_2(bad)
