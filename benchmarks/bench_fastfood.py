"""Speed of the Fastfood layer against ``torch.fft.rfft`` of the same tensor and ``nn.Linear`` of the same shape.

Groups (float32, batch 128 by default; a square layer, ``d = N``, one block):

* ``fastfood forward N=…``: the layer (no autograd) vs ``torch.fft.rfft`` (the reference), the layer on its
  pure-PyTorch path, and ``structlin.transforms.fwht`` alone (one of the two transforms a block runs);
* ``fastfood forward+backward N=…``: the layer (input, ``S``, ``G``, ``B`` and bias gradients) vs
  ``nn.Linear(N, N)``, and the layer on its pure-PyTorch path.
"""

import contextlib

import pytest
import torch
from torch import nn

from structlin import Fastfood
from structlin.transforms import fwht, native_kernels

from steps import training_step


def _backend(impl):
    return native_kernels(False) if impl.endswith("torch-path") else contextlib.nullcontext()


@pytest.mark.parametrize("impl", ["structlin", "structlin-torch-path", "fwht", "torch.fft.rfft"])
def test_fastfood_forward(timed, impl, x, n):
    group = f"fastfood forward N={n}"
    if impl == "torch.fft.rfft":
        timed(group, lambda: torch.fft.rfft(x))
    elif impl == "fwht":
        timed(group, lambda: fwht(x))
    else:
        layer = Fastfood(n, n).to(x.device)
        with torch.no_grad(), _backend(impl):
            timed(group, lambda: layer(x))


@pytest.mark.parametrize("impl", ["structlin", "structlin-torch-path", "nn.Linear"])
def test_fastfood_forward_backward(timed, impl, x, n):
    module = (nn.Linear(n, n) if impl == "nn.Linear" else Fastfood(n, n)).to(x.device)
    x.requires_grad_(True)
    with _backend(impl):
        timed(f"fastfood forward+backward N={n}", training_step(module, x))
