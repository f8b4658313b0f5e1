"""Structured layers at a million features: memory stays O(batch · N), nothing of N² elements is ever made."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from structlin import StructuredLayer

N = 2**20
BATCH = 2
SCALE_OPTIONS = {"acdc": {"depth": 3}, "fastfood": {}}


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any dispatched op returns."""

    def __init__(self):
        super().__init__()
        self.largest, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.numel() > self.largest:
                self.largest, self.op = tensor.numel(), func
        return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(SCALE_OPTIONS))
def test_a_million_features_forward_and_backward_in_linear_memory(kind):
    torch.manual_seed(0)
    layer = StructuredLayer.create(kind, N, N, **SCALE_OPTIONS[kind])
    x = torch.randn(BATCH, N, requires_grad=True)
    saved = []
    with LargestTensor() as largest, torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        layer(x).square().sum().backward()
    # the biggest tensor is a batch of spectra or activations: a small multiple of BATCH · N, never N²
    assert largest.largest <= 4 * BATCH * N, (largest.op, largest.largest)
    assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    # activations: saved tensors shaped (..., BATCH, features): the layer's input, which both kinds keep alone (ACDC
    # recomputes its block inputs in backward; the rest are parameter-sized pieces and indices)
    activations = sum(t.numel() * t.element_size() for t in saved
                      if t.is_floating_point() and t.dim() >= 2 and t.shape[-2] == BATCH)
    assert activations == layer.cost((BATCH,)).saved_bytes + BATCH * N * 4  # + the input of square()
    assert layer.cost((BATCH,)).saved_bytes == BATCH * N * 4
