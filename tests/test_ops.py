"""The op-registration helper, including the autograd.Function path used on torch < 2.4."""

import torch

from structlin.transforms import dct, idct
from structlin.transforms._ops import autograd_function_op


def test_autograd_function_fallback_matches_the_custom_op():
    op = autograd_function_op("FallbackDCT", lambda x, norm: dct(x.detach(), norm), lambda g, norm: idct(g, norm))
    x = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(op(x, "ortho"), dct(x), rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda t: op(t, "ortho"), (x,))


def test_ops_are_registered_in_the_structlin_namespace():
    for name in ("dct", "idct", "fwht"):
        assert hasattr(torch.ops.structlin, name)
    x = torch.randn(2, 8)
    torch.testing.assert_close(torch.ops.structlin.dct(x, "ortho"), dct(x))
