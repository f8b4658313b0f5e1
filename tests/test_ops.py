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


def test_transforms_with_options_take_the_eager_route_and_modes_still_see_the_op():
    """A transform called with an option (``norm``, ``normalized``) in plain eager code runs as an
    ``autograd.Function``, without the custom op's dispatch; under a dispatch mode the op runs and is counted, with
    the same values."""
    from torch.utils.flop_counter import FlopCounterMode

    from structlin.transforms import dct1, dctn, fwht

    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    calls = {"dct": lambda: dct(x, norm=None), "idct": lambda: idct(x), "dct1": lambda: dct1(x),
             "fwht": lambda: fwht(x, normalized=False), "dctn": lambda: dctn(x, dim=(0, 1))}
    for name, call in calls.items():
        y = call()
        assert type(y.grad_fn).__name__ == f"{name}Backward", (name, type(y.grad_fn).__name__)
        with FlopCounterMode(display=False) as counter:
            counted = call()
        assert f"structlin.{name}" in {str(op) for op in counter.get_flop_counts()["Global"]}
        assert torch.equal(y, counted)


def test_without_a_gradient_to_record_the_function_is_skipped_and_the_values_are_the_same():
    """Where no gradient is recorded (no_grad, or an input that needs none) the transform runs without its
    ``autograd.Function``: no graph node, the same values as with one."""
    calls = {"dct": lambda t: dct(t, norm=None), "idct": lambda t: idct(t, norm="forward")}
    x = torch.randn(4, 16, dtype=torch.float64)
    for name, call in calls.items():
        recorded = call(x.clone().requires_grad_(True))
        assert type(recorded.grad_fn).__name__ == f"{name}Backward"
        with torch.no_grad():
            unrecorded = call(x.clone().requires_grad_(True))
        plain = call(x)
        assert unrecorded.grad_fn is None and not unrecorded.requires_grad
        assert plain.grad_fn is None and not plain.requires_grad
        assert torch.equal(unrecorded, recorded) and torch.equal(plain, recorded)
