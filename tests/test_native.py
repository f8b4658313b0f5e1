"""The native kernels' loader: built on this machine, switched off on request, and a clean fallback."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from structlin import _native

_PROBE = textwrap.dedent(
    """
    import torch, scipy.fft
    from structlin import _native
    from structlin.transforms import dct, fwht, native_status
    x = torch.randn(3, 10, dtype=torch.float64)
    assert (dct(x) - torch.from_numpy(scipy.fft.dct(x.numpy(), norm="ortho"))).abs().max() < 1e-10
    fwht(torch.randn(2, 8))
    print(_native.available(), native_status())
    """
)


def _probe(tmp_path, **env):
    environment = {**os.environ, "STRUCTLIN_CACHE_DIR": str(tmp_path / "cache"), **env}
    done = subprocess.run([sys.executable, "-c", _PROBE], env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler on this machine")
def test_native_kernels_build_where_a_compiler_exists():
    assert _native.available(), _native.native_status()
    assert _native.native_status().startswith("loaded")


def test_environment_variable_turns_them_off(tmp_path):
    assert _probe(tmp_path, STRUCTLIN_NATIVE="0") == "False disabled (STRUCTLIN_NATIVE=0)"


def test_without_a_compiler_the_pure_pytorch_path_computes_the_same(tmp_path):
    out = _probe(tmp_path, CC="/nonexistent/cc")
    assert out.startswith("False unavailable: RuntimeError: no C compiler found")


def test_explicitly_requested_native_warns_when_it_cannot_build(tmp_path):
    environment = {**os.environ, "STRUCTLIN_CACHE_DIR": str(tmp_path), "CC": "/nonexistent/cc", "STRUCTLIN_NATIVE": "1"}
    code = "import warnings, torch; from structlin.transforms import dct; warnings.simplefilter('error'); dct(torch.ones(4))"
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "native kernels unavailable" in done.stderr


def test_wrappers_reject_bad_tensors():
    if not _native.available():
        pytest.skip(_native.native_status())
    import torch

    with pytest.raises(ValueError):
        _native.dct_reorder(torch.ones(2, 4), torch.ones(2, 4, dtype=torch.float64))


def test_gather_kernel_matches_index_select_with_zero_padding():
    if not _native.available():
        pytest.skip(_native.native_status())
    import torch

    for dtype in (torch.float32, torch.float64):
        src = torch.randn(5, 7, dtype=dtype)
        index = torch.tensor([6, -1, 0, 3, 3, -1, 2, 1, 5], dtype=torch.int64)
        out = _native.gather(src, index, torch.empty(5, 9, dtype=dtype))
        expected = torch.cat([src, torch.zeros(5, 1, dtype=dtype)], 1)[:, torch.where(index < 0, 7, index)]
        assert torch.equal(out, expected)
    with pytest.raises(ValueError):
        _native.gather(src, torch.tensor([7]), torch.empty(5, 1, dtype=dtype))


@pytest.mark.parametrize("rows, n", [(3, 10), (7, 1030)])  # 1030: more than one chunk of bins and of columns
def test_acdc_backward_kernels_match_torch(rows, n):
    if not _native.available():
        pytest.skip(_native.native_status())
    import torch

    for dtype in (torch.float64, torch.float32):
        tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-4}
        bins = n // 2 + 1
        G = torch.randn(rows, bins, dtype=dtype), torch.randn(rows, bins, dtype=dtype)
        U = torch.randn(rows, bins, dtype=dtype), torch.randn(rows, bins, dtype=dtype)
        m00, m01, m11 = (torch.randn(bins, dtype=dtype) for _ in range(3))
        g, acc = torch.stack(G, -1), torch.empty(bins, 3, dtype=dtype)
        assert _native.bin_grad_map_(g, torch.stack(U, -1), m00, m01, m11, acc) is g
        expected = torch.stack([(G[0] * U[0]).sum(0), (G[0] * U[1] + G[1] * U[0]).sum(0), (G[1] * U[1]).sum(0)], 1)
        torch.testing.assert_close(acc, expected, **tol)
        torch.testing.assert_close(g[..., 0], m00 * G[0] + m01 * G[1], **tol)
        torch.testing.assert_close(g[..., 1], m01 * G[0] + m11 * G[1], **tol)

        grad, x, a = torch.randn(rows, n, dtype=dtype), torch.randn(rows, n, dtype=dtype), torch.randn(n, dtype=dtype)
        for relu_mask in (False, True):
            scaled, acc = grad.clone(), torch.empty(n, dtype=dtype)
            assert _native.colsum_scale_(scaled, x, a, acc, relu_mask) is scaled
            torch.testing.assert_close(acc, (grad * x).sum(0), **tol)
            expected = grad * a * (x > 0) if relu_mask else grad * a
            torch.testing.assert_close(scaled, expected, **tol)

    with pytest.raises(ValueError, match="bin_grad_map_"):
        _native.bin_grad_map_(g, g[:1], m00, m01, m11, torch.empty(bins, 3, dtype=dtype))
    with pytest.raises(ValueError, match="colsum_scale_"):
        _native.colsum_scale_(scaled, scaled, a, torch.empty(n, dtype=dtype))  # the gradient may not be x
