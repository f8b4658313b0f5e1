"""The state contract every registered layer kind keeps; a newly registered kind runs these tests without edits.

* meta-device construction (``device="meta"``, ``with torch.device("meta")``, ``torch.nn.utils.skip_init``) touches
  no data; after ``to_empty()`` a seeded ``reset_parameters()`` gives exactly the layer built normally with that
  seed, and a layer whose buffers were never filled refuses to run;
* whatever a layer derives from a buffer follows the buffer: an in-place edit (or a ``.data`` assignment) gives the
  forward and backward of a fresh layer that loaded the edited ``state_dict``;
* a ``state_dict`` with a bad permutation buffer is refused, with the key in the message, before anything of the
  layer changes;
* unsupported dtypes are refused at construction.
"""

import copy

import pytest
import torch

from structlin.layers import layer_class
from layer_cases import CASES, build, perturb_

SHAPE = (7, 9)


def _options(options, in_features, out_features):
    return {k: (v(in_features, out_features) if callable(v) else v) for k, v in options.items()}


def _float64(layer):
    return perturb_(layer.to(torch.float64))


def _assert_same_state(a, b):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert list(state_a) == list(state_b)
    for name in state_a:
        assert state_a[name].dtype == state_b[name].dtype and torch.equal(state_a[name], state_b[name]), name


def _run(layer, x):
    """Output, input gradient and parameter gradients of ``sum(y · w)`` for a fixed weight ``w``."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    y = layer(x)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    (y * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters() if p.grad is not None}
    return y.detach(), x.grad, grads


def _assert_same_run(first, second):
    (y1, gx1, g1), (y2, gx2, g2) = first, second
    assert torch.equal(y1, y2)
    assert torch.equal(gx1, gx2)
    assert g1.keys() == g2.keys()
    for name in g1:
        assert torch.equal(g1[name], g2[name]), name


def _meta_build(kind, options, how):
    if how == "device":
        return build(kind, options, *SHAPE, device="meta")
    with torch.device("meta"):
        return build(kind, options, *SHAPE)


def _permutation_buffers(layer):
    """The persistent integer buffers whose every row is a permutation of ``0 … n − 1`` (by their current value)."""
    found = []
    for name, value in layer.state_dict().items():
        if value.dtype == torch.int64 and value.dim() == 2 and value.numel():
            if torch.equal(value.sort(dim=1).values, torch.arange(value.shape[1]).expand_as(value)):
                found.append(name)
    return found


@pytest.mark.parametrize("how", ["device", "context"])
@pytest.mark.parametrize("kind, options, linear", CASES)
def test_builds_on_the_meta_device_and_runs_there(kind, options, linear, how):
    layer = _meta_build(kind, options, how)
    normal = build(kind, options, *SHAPE)
    tensors = list(layer.state_dict().items())
    assert tensors and all(t.is_meta for _, t in tensors)
    expected = [(k, t.shape, t.dtype) for k, t in normal.state_dict().items()]
    assert [(k, t.shape, t.dtype) for k, t in tensors] == expected
    y = layer(torch.empty(4, SHAPE[0], device="meta"))  # shapes propagate without data
    assert y.is_meta and y.shape == (4, SHAPE[1])


@pytest.mark.parametrize("how", ["device", "context"])
@pytest.mark.parametrize("kind, options, linear", CASES)
def test_to_empty_then_seeded_reset_equals_a_normal_build(kind, options, linear, how):
    layer = _meta_build(kind, options, how).to_empty(device="cpu")
    torch.manual_seed(11)
    layer.reset_parameters()
    normal = build(kind, options, *SHAPE, seed=11)
    _assert_same_state(layer, normal)
    x = torch.randn(5, SHAPE[0])
    assert torch.equal(layer(x), normal(x))


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_skip_init_refuses_uninitialised_buffers_until_reset_or_loaded(kind, options, linear):
    cls, resolved = layer_class(kind), _options(options, *SHAPE)
    normal = build(kind, options, *SHAPE, seed=3)
    x = torch.randn(5, SHAPE[0])
    loaded = torch.nn.utils.skip_init(cls, *SHAPE, **resolved)
    if list(loaded.buffers()):  # buffers that were never drawn must not be computed with
        with pytest.raises(RuntimeError, match=r"uninitialised memory.*reset_parameters\(\) or load_state_dict\(\)"):
            loaded(x)
    loaded.load_state_dict(normal.state_dict())
    assert torch.equal(loaded(x), normal(x))
    reset = torch.nn.utils.skip_init(cls, *SHAPE, **resolved)
    torch.manual_seed(3)
    reset.reset_parameters()
    _assert_same_state(reset, normal)
    assert torch.equal(reset(x), normal(x))


@pytest.mark.parametrize("edit", ["copy_", "data"])
@pytest.mark.parametrize("kind, options, linear", CASES)
def test_in_place_buffer_edits_are_followed_forward_and_backward(kind, options, linear, edit):
    layer = _float64(build(kind, options, *SHAPE, seed=0))
    other = build(kind, options, *SHAPE, seed=1, dtype=torch.float64)  # another valid value of every buffer
    names = [name for name in layer.state_dict() if name in dict(layer.named_buffers())]
    if not names:
        pytest.skip(f"{kind} has no persistent buffers")
    x = torch.randn(5, SHAPE[0], dtype=torch.float64)
    for name in names:
        edited = copy.deepcopy(layer)
        before = _run(edited, x)  # builds whatever the layer derives from its buffers
        value = other.get_buffer(name)
        if torch.equal(value, edited.get_buffer(name)):
            continue
        if edit == "copy_":
            with torch.no_grad():
                edited.get_buffer(name).copy_(value)
        else:
            edited.get_buffer(name).data = value.clone()
        fresh = build(kind, options, *SHAPE, seed=2, dtype=torch.float64)
        fresh.load_state_dict(edited.state_dict())
        after = _run(edited, x)
        _assert_same_run(after, _run(fresh, x))
        assert not torch.equal(after[0], before[0]), f"editing {name} changed nothing"


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_bad_permutations_on_load_name_the_key_and_change_nothing(kind, options, linear):
    layer = _float64(build(kind, options, *SHAPE, seed=0))
    names = _permutation_buffers(layer)
    if not names:
        pytest.skip(f"{kind} has no permutation buffers")
    incoming = _float64(build(kind, options, *SHAPE, seed=5)).state_dict()  # differs from layer's everywhere
    x = torch.randn(4, SHAPE[0], dtype=torch.float64)
    expected_state, expected_y = copy.deepcopy(layer.state_dict()), layer(x)
    for name in names:
        good = incoming[name]
        repeated = good.clone()
        repeated[0, 1] = repeated[0, 0]
        negative = good.clone()
        negative[-1, 0] = -1
        too_large = good.clone()
        too_large[0, 0] = good.shape[1]
        wrong = (good.double(), good.to(torch.int32), good[:, :-1], good.repeat(2, 1))  # dtype, shape
        for bad in (repeated, negative, too_large, *wrong):
            state = dict(incoming, **{name: bad})
            with pytest.raises((ValueError, RuntimeError), match=name.replace(".", r"\.")):
                layer.load_state_dict(state)
            for key, value in layer.state_dict().items():
                assert torch.equal(value, expected_state[key]), (name, key)
            assert torch.equal(layer(x), expected_y)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.complex64, torch.bool], ids=str)
@pytest.mark.parametrize("kind, options, linear", CASES)
def test_unsupported_dtypes_are_refused_at_construction(kind, options, linear, dtype):
    with pytest.raises(TypeError, match=r"float16, bfloat16, float32, float64; got dtype=" + str(dtype)):
        build(kind, options, *SHAPE, dtype=dtype)


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_first_call_under_inference_mode_does_not_spoil_training(kind, options, linear):
    layer = build(kind, options, 11, 4)  # sizes no other test here uses: tables built fresh
    x = torch.randn(4, 11)
    with torch.inference_mode():
        expected = layer(x)
    y = layer(x.requires_grad_())
    y.sum().backward()
    assert torch.equal(y.detach(), expected) and x.grad is not None


@pytest.mark.parametrize("kind, options, linear", CASES)
def test_first_call_under_a_torch_func_transform_does_not_spoil_later_calls(kind, options, linear):
    layer = build(kind, options, 10, 3, dtype=torch.float64)  # sizes no other test here uses: tables built fresh
    x = torch.randn(2, 10, dtype=torch.float64)
    hessian = torch.func.hessian(lambda v: layer(v).sum())(x)  # the first call, inside nested transforms
    assert hessian.shape == (2, 10, 2, 10) and torch.isfinite(hessian).all()
    jacobian = torch.func.jacrev(layer)(x)  # then inside another transform
    y = layer(x.requires_grad_())  # and outside any
    y.sum().backward()
    torch.testing.assert_close(x.grad, jacobian.sum((0, 1)), rtol=1e-12, atol=1e-12)
