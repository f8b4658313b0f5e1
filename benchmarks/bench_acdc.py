"""Speed of ACDC against ``nn.Linear`` of the same shape, FFTs of the same tensor, and a torch_dct cascade.

Groups (float32, batch 128 by default):

* ``acdc block forward N=…``: one block vs ``torch.fft.rfft`` followed by ``torch.fft.irfft`` (the reference);
* ``acdc block forward+backward N=…``: one block vs ``nn.Linear(N, N)``;
* ``acdc depth-12 forward+backward N=…``: a 12-block cascade vs ``nn.Linear(N, N)`` and vs the same cascade
  written with ``torch_dct.dct``/``idct`` and plain autograd (no permutations in either, for a like-for-like
  comparison of the blocks); also with permutations, and with permutations and ReLUs between blocks.
"""

import pytest
import torch
import torch_dct
from torch import nn

from structlin import ACDC

from steps import training_step


class TorchDctCascade(nn.Module):
    """The same blocks with torch_dct's DCT and autograd through it (the usual pure-PyTorch ACDC)."""

    def __init__(self, n, depth):
        super().__init__()
        self.A = nn.Parameter(torch.randn(depth, n) * 0.01 + 1)
        self.D = nn.Parameter(torch.randn(depth, n) * 0.01 + 1)
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        for a, d in zip(self.A, self.D):
            x = torch_dct.idct(d * torch_dct.dct(a * x, norm="ortho"), norm="ortho")
        return x + self.bias


@pytest.mark.parametrize("impl", ["structlin", "torch.fft.rfft+irfft"])
def test_acdc_block_forward(timed, impl, x, n):
    if impl == "structlin":
        layer = ACDC(n, n, depth=1).to(x.device)
        with torch.no_grad():
            timed(f"acdc block forward N={n}", lambda: layer(x))
    else:
        timed(f"acdc block forward N={n}", lambda: torch.fft.irfft(torch.fft.rfft(x), n=n))


@pytest.mark.parametrize("impl", ["structlin", "nn.Linear"])
def test_acdc_block_forward_backward(timed, impl, x, n):
    module = (ACDC(n, n, depth=1) if impl == "structlin" else nn.Linear(n, n)).to(x.device)
    x.requires_grad_(True)
    timed(f"acdc block forward+backward N={n}", training_step(module, x))


@pytest.mark.parametrize("impl", ["structlin", "structlin-permuted", "structlin-relu", "torch_dct-autograd", "nn.Linear"])
def test_acdc_depth12_forward_backward(timed, impl, x, n):
    modules = {
        "structlin": lambda: ACDC(n, n, depth=12, permute=False),
        "structlin-permuted": lambda: ACDC(n, n, depth=12, permute=True),
        "structlin-relu": lambda: ACDC(n, n, depth=12, permute=True, activation="relu"),
        "torch_dct-autograd": lambda: TorchDctCascade(n, 12),
        "nn.Linear": lambda: nn.Linear(n, n),
    }
    module = modules[impl]().to(x.device)
    x.requires_grad_(True)
    timed(f"acdc depth-12 forward+backward N={n}", training_step(module, x))
