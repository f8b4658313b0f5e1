"""The transforms under torch.compile(fullgraph=True): no graph breaks, same values as eager."""

import pytest
import torch

from structlin.transforms import dct, fwht, idct


def _pipeline(x):
    return fwht(idct(torch.sin(dct(x)) * 2.0, norm=None)) + dct(x, norm="forward")


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["aot_eager", "inductor"])
def test_compiled_forward_and_backward_equal_eager(backend_name, backend):
    x = torch.randn(4, 64, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(_pipeline, fullgraph=True, backend=backend_name)
    y = compiled(x)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    y_eager = _pipeline(x)
    (grad_eager,) = torch.autograd.grad(y_eager.square().sum(), x)
    torch.testing.assert_close(y, y_eager, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_eager, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_compiled_with_dynamic_batch(backend):
    compiled = torch.compile(lambda t: idct(dct(t)), fullgraph=True, backend="aot_eager", dynamic=True)
    for rows in (2, 5, 0):
        x = torch.randn(rows, 10)
        torch.testing.assert_close(compiled(x), x, rtol=1e-5, atol=1e-5)
