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


def acdc_scipy_reference(layer, x: torch.Tensor):
    """An ACDC layer block by block with scipy's DCT, in float64, in natural order (its activation, if any, between
    blocks): ``(..., in_features)`` → numpy ``(..., out_features)``. With diagonal biases ``a``, ``d`` a block is
    the authors' ``C⁻¹ (D ⊙ C (A ⊙ v + a) + d)``."""
    import numpy as np
    import scipy.fft

    def numpy(t):
        return 0 if t is None else t.detach().double().numpy()

    A, D, n = numpy(layer.A), numpy(layer.D), layer.size
    a, d = (numpy(getattr(layer, name, None)) for name in ("A_bias", "D_bias"))
    a, d = np.broadcast_to(a, A.shape), np.broadcast_to(d, D.shape)
    v = np.zeros(x.shape[:-1] + (n,))
    v[..., : layer.in_features] = x.detach().double().numpy()
    for i in range(layer.depth):
        v = scipy.fft.idct(D[i] * scipy.fft.dct(A[i] * v + a[i], norm="ortho", axis=-1) + d[i], norm="ortho", axis=-1)
        if i < layer.depth - 1:
            if layer.permutations is not None:
                v = v[..., layer.permutations[i].numpy()]
            if layer.activation is not None:
                v = layer.activation(torch.from_numpy(v)).numpy()
    y = v[..., : layer.out_features]
    return y + layer.bias.detach().double().numpy() if layer.bias is not None else y
