"""The transforms under torch.compile(fullgraph=True): no graph breaks, same values as eager."""

import pytest
import torch

from structlin.transforms import dct, fwht, idct

from helpers import assert_compiled_matches_eager


def _pipeline(x):
    return fwht(idct(torch.sin(dct(x)) * 2.0, norm=None)) + dct(x, norm="forward")


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["aot_eager", "inductor"])
def test_compiled_forward_and_backward_equal_eager(backend_name, backend):
    x = torch.randn(4, 64, dtype=torch.float64, requires_grad=True)
    assert_compiled_matches_eager(_pipeline, x, backend=backend_name)


@pytest.mark.slow
def test_compiled_with_dynamic_batch(backend):
    compiled = torch.compile(lambda t: idct(dct(t)), fullgraph=True, backend="aot_eager", dynamic=True)
    for rows in (2, 5, 0):
        x = torch.randn(rows, 10)
        torch.testing.assert_close(compiled(x), x, rtol=1e-5, atol=1e-5)
