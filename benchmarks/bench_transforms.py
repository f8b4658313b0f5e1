"""Speed of the transforms against their references (float32, batch 128 by default).

Groups put each structlin transform beside ``torch.fft.rfft`` of the same tensor (the reference the bars are
stated against), ``torch_dct`` and scipy; the FWHT also beside a dense Hadamard matmul.
"""

import functools

import pytest
import scipy.fft
import scipy.linalg
import torch
import torch_dct

from structlin.transforms import dct, fwht, fwht_butterfly, native_kernels
from structlin.transforms.hadamard import _fwht_kronecker


def _forward_backward(fn, x):
    x = x.detach().requires_grad_(True)
    y = fn(x)
    y.backward(torch.ones_like(y))
    return x.grad


DCT_FORWARD = {
    "structlin": dct,
    "torch.fft.rfft": torch.fft.rfft,
    "torch_dct": functools.partial(torch_dct.dct, norm="ortho"),
}


@pytest.mark.parametrize("impl", list(DCT_FORWARD) + ["structlin-torch-path", "scipy"])
def test_dct_forward(timed, impl, x, n):
    if impl == "scipy":
        if x.device.type != "cpu":
            pytest.skip("scipy runs on the CPU")
        data = x.numpy()
        timed(f"dct forward N={n}", lambda: scipy.fft.dct(data, norm="ortho", axis=-1, workers=torch.get_num_threads()))
    elif impl == "structlin-torch-path":
        with native_kernels(False):
            timed(f"dct forward N={n}", lambda: dct(x))
    else:
        timed(f"dct forward N={n}", lambda: DCT_FORWARD[impl](x))


@pytest.mark.parametrize("impl", ["structlin", "torch.fft.rfft", "torch_dct"])
def test_dct_forward_backward(timed, impl, x, n):
    fn = (lambda t: torch.fft.rfft(t).real) if impl == "torch.fft.rfft" else DCT_FORWARD[impl]
    timed(f"dct forward+backward N={n}", lambda: _forward_backward(fn, x))


@functools.lru_cache(maxsize=8)
def _dense_hadamard(n, device):
    return torch.tensor(scipy.linalg.hadamard(n) / n**0.5, dtype=torch.float32, device=device)


@pytest.mark.parametrize("impl", ["structlin", "kronecker", "butterfly", "dense-matmul", "torch.fft.rfft"])
def test_fwht_forward(timed, impl, x, n):
    fns = {
        "structlin": fwht,
        "kronecker": lambda t: _fwht_kronecker(t, True),
        "butterfly": fwht_butterfly,
        "dense-matmul": lambda t: t @ _dense_hadamard(n, t.device),
        "torch.fft.rfft": torch.fft.rfft,
    }
    if impl == "dense-matmul" and n > 4096:
        pytest.skip("dense Hadamard matrix too large to be a sensible baseline")
    timed(f"fwht forward N={n}", lambda: fns[impl](x))


@pytest.mark.parametrize("impl", ["structlin", "dense-matmul"])
def test_fwht_forward_backward(timed, impl, x, n):
    if impl == "dense-matmul" and n > 4096:
        pytest.skip("dense Hadamard matrix too large to be a sensible baseline")
    fn = fwht if impl == "structlin" else (lambda t: t @ _dense_hadamard(n, t.device))
    timed(f"fwht forward+backward N={n}", lambda: _forward_backward(fn, x))
