"""Assertions shared by several test modules."""

import torch


def assert_compiled_matches_eager(fn, x: torch.Tensor, backend: str = "aot_eager", tol: float = 1e-12) -> None:
    """``torch.compile(fn, fullgraph=True)`` gives eager's output and input gradient (of ``sum(y²)``)."""
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    results = []
    for f in (compiled, fn):
        y = f(x)
        (grad,) = torch.autograd.grad(y.square().sum(), x)
        results.append((y, grad))
    (y, grad), (y_eager, grad_eager) = results
    torch.testing.assert_close(y, y_eager, rtol=tol, atol=tol)
    torch.testing.assert_close(grad, grad_eager, rtol=tol, atol=tol)
