import copy

import numpy as np
import pytest
import scipy.fft
import torch
from torch import nn

import structlin
from structlin import ACDC, StructuredLayer
from structlin.costs import rfft_flops
from structlin.strategies import ACDC_INITS, DEPTHS
from structlin.strategies.init import ACDCInit

from helpers import acdc_scipy_reference, assert_compiled_matches_eager


def _random_layer(*args, **kwargs) -> ACDC:
    layer = ACDC(*args, dtype=torch.float64, **kwargs)
    with torch.no_grad():  # far from the identity, so a wrong index cannot hide
        layer.A.normal_()
        layer.D.normal_()
        if layer.bias is not None:
            layer.bias.normal_()
    return layer


SHAPES = [(1, 1), (2, 2), (7, 7), (8, 8), (16, 16), (5, 9), (9, 5), (100, 300), (300, 100), (33, 33)]


@pytest.mark.parametrize("in_features, out_features", SHAPES)
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("permute", [True, False])
def test_forward_matches_scipy_reference_and_to_dense(in_features, out_features, depth, permute, backend):
    layer = _random_layer(in_features, out_features, depth=depth, permute=permute)
    x = torch.randn(4, in_features, dtype=torch.float64)
    y = layer(x)
    np.testing.assert_allclose(y.detach().numpy(), acdc_scipy_reference(layer, x), rtol=0, atol=1e-10)
    dense = layer.to_dense()
    assert dense.shape == (out_features, in_features)
    torch.testing.assert_close(y, x @ dense.T + layer.bias, rtol=0, atol=1e-10)


@pytest.mark.parametrize("activation", ["relu", nn.Tanh(), nn.LayerNorm(12, elementwise_affine=False)])
def test_activations_between_blocks_match_reference(activation, backend):
    layer = _random_layer(12, 12, depth=4, activation=activation)
    x = torch.randn(5, 12, dtype=torch.float64)
    np.testing.assert_allclose(layer(x).detach().numpy(), acdc_scipy_reference(layer, x), rtol=0, atol=1e-10)
    with pytest.raises(TypeError, match="not a linear map"):
        layer.to_dense()


@pytest.mark.parametrize(
    "in_features, out_features, depth, activation",
    [(6, 6, 1, None), (5, 8, 3, "relu"), (6, 6, 3, "relu"), (8, 3, 2, None), (6, 6, 2, "gelu")],
)
def test_gradcheck_input_and_diagonals(in_features, out_features, depth, activation, backend):
    layer = _random_layer(in_features, out_features, depth=depth, activation=activation)
    x = torch.randn(3, in_features, dtype=torch.float64, requires_grad=True)
    A = layer.A.detach().clone().requires_grad_(True)
    D = layer.D.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)

    def f(x, A, D, bias):
        return torch.func.functional_call(layer, {"A": A, "D": D, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, A, D, bias))


def test_gradients_match_autograd_through_scipy_free_reference(backend):
    """The analytic backward against plain autograd through structlin's dct/idct block by block."""
    from structlin.transforms import dct, idct

    layer = _random_layer(10, 10, depth=3)
    x = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    A, D = layer.A.detach().requires_grad_(True), layer.D.detach().requires_grad_(True)
    x2 = x.detach().requires_grad_(True)
    v = x2
    for i in range(3):
        v = idct(D[i] * dct(A[i] * v))
        if i < 2:
            v = v[..., layer.permutations[i]]
    (v + layer.bias.detach()).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.A.grad, A.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.D.grad, D.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", [(), (0,), (2, 3), (1, 1, 4)])
def test_batch_shapes(shape, backend):
    layer = _random_layer(6, 4, depth=2)
    x = torch.randn(*shape, 6, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (*shape, 4)
    if x.numel():
        np.testing.assert_allclose(y.detach().numpy(), acdc_scipy_reference(layer, x), rtol=0, atol=1e-10)


def test_non_contiguous_and_expanded_inputs():
    layer = _random_layer(8, 8, depth=2)
    base = torch.randn(8, 16, dtype=torch.float64)
    for x in (base.T, base[:, ::2], base[:1, :8].expand(3, 8)):
        torch.testing.assert_close(layer(x), layer(x.contiguous()), rtol=0, atol=0)


def test_state_dict_round_trip_reproduces_outputs_exactly():
    torch.manual_seed(0)
    layer = ACDC(20, 20, depth=4, activation="relu")
    torch.manual_seed(1)
    other = ACDC(20, 20, depth=4, activation="relu")
    x = torch.randn(3, 20)
    assert not torch.equal(layer(x), other(x))
    assert "permutations" in layer.state_dict()
    other.load_state_dict(layer.state_dict())
    assert torch.equal(layer(x), other(x))


def test_same_seed_same_layer_and_reset_parameters_redraws():
    torch.manual_seed(3)
    a = ACDC(16, 16, depth=3)
    torch.manual_seed(3)
    b = ACDC(16, 16, depth=3)
    x = torch.randn(2, 16)
    assert torch.equal(a(x), b(x))
    before = a.A.detach().clone()
    a.reset_parameters()
    assert not torch.equal(a.A, before)


def test_identity_init_is_the_identity_without_permutations():
    layer = ACDC(9, 9, depth=5, init="identity", permute=False)
    x = torch.randn(4, 9, dtype=torch.float32)
    torch.testing.assert_close(layer(x), x, rtol=1e-5, atol=1e-5)


def test_paper_init_is_near_one():
    torch.manual_seed(0)
    layer = ACDC(512, 512, depth=2, init="paper")
    for p in (layer.A, layer.D):
        assert abs(p.mean().item() - 1) < 2e-3 and abs(p.std().item() - 0.01) < 2e-3


def test_variance_preserving_init_keeps_scale_through_relus():
    torch.manual_seed(0)
    n, depth = 1024, 12
    x = torch.randn(256, n)
    preserving = ACDC(n, n, depth=depth, init="variance-preserving", activation="relu", bias=False)
    paper = ACDC(n, n, depth=depth, init="paper", activation="relu", bias=False)
    with torch.no_grad():
        ratio_preserving = preserving(x).square().mean().item() / x.square().mean().item()
        ratio_paper = paper(x).square().mean().item() / x.square().mean().item()
    assert 0.7 < ratio_preserving < 1.4
    # near-identity blocks keep the first ReLU's output non-negative, so only that ReLU removes anything
    assert 0.4 < ratio_paper < 0.6


def test_depth_strategies():
    assert ACDC(1000, 1000, depth="log2").depth == 10
    assert ACDC(5, 5, depth=lambda n: n + 1).depth == 6
    assert "log2" in DEPTHS.names()


def test_registering_a_user_init_and_depth():
    @ACDC_INITS.register("all-twos-test")
    class AllTwos(ACDCInit):
        def init_(self, A, D, activation_gain=1.0):
            A.fill_(2.0)
            D.fill_(2.0)

    @DEPTHS.register("three-test")
    def three(n):
        return 3

    layer = ACDC(4, 4, init="all-twos-test", depth="three-test", permute=False, bias=False)
    assert layer.depth == 3
    x = torch.randn(2, 4)
    torch.testing.assert_close(layer(x), 64 * x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"init": "nope"}, "valid names: .*identity, paper, variance-preserving"),
        ({"depth": "nope"}, "valid names: .*log2"),
        ({"depth": 0}, "depth must be an int >= 1"),
        ({"activation": "nope"}, "valid names: gelu, relu, sigmoid, silu, tanh"),
        ({"activation": 3}, "activation must be None"),
    ],
)
def test_unknown_strategies_list_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ACDC(8, 8, **kwargs)


def test_bad_inputs_name_the_expected_value():
    layer = ACDC(8, 4)
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        layer(torch.randn(2, 7))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="float32 inputs"):
        layer(torch.ones(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive int"):
        ACDC(0, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_half_outputs(dtype, backend):
    layer = ACDC(16, 16, depth=2)
    x = torch.randn(3, 16)
    y = layer(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y, layer(x.to(dtype).float()).to(dtype), rtol=0, atol=0)


def test_registry_and_create():
    assert "acdc" in structlin.available_layers()
    layer = StructuredLayer.create("acdc", 16, 8, depth=2)
    assert isinstance(layer, ACDC) and (layer.in_features, layer.out_features, layer.depth) == (16, 8, 2)
    with pytest.raises(ValueError, match="unknown layer kind 'nope'; valid names: .*acdc"):
        StructuredLayer.create("nope", 4, 4)
    assert structlin.layers.layer_class("acdc") is ACDC
    with pytest.raises(ValueError, match="unknown layer kind 'nope'; valid names: .*acdc"):
        structlin.layers.layer_class("nope")


def test_register_a_user_layer_kind():
    @structlin.register_layer("scaled-identity-test")
    class ScaledIdentity(StructuredLayer):
        def __init__(self, in_features, out_features, scale=2.0):
            super().__init__(in_features, out_features)
            self.scale = scale

        def forward(self, x):
            return self.scale * x

    try:
        layer = StructuredLayer.create("scaled-identity-test", 3, 3, scale=3.0)
        assert torch.equal(layer(torch.ones(3)), torch.full((3,), 3.0))
        with pytest.raises(TypeError, match="not a linear map"):
            layer.to_dense()
    finally:
        assert structlin.unregister_layer("scaled-identity-test") is ScaledIdentity
    assert "scaled-identity-test" not in structlin.available_layers()
    with pytest.raises(ValueError, match="unknown layer kind 'scaled-identity-test'"):
        structlin.unregister_layer("scaled-identity-test")


def test_extra_repr_and_cost():
    layer = ACDC(100, 50, depth=3, activation="relu")
    text = repr(layer)
    assert "in_features=100" in text and "depth=3" in text and "size=100" in text
    assert "recompute=True" in text and "path='auto'" in text
    cost = layer.cost((8,))
    assert cost.params == sum(p.numel() for p in layer.parameters()) == 2 * 3 * 100 + 50
    assert cost.saved_bytes == 8 * 100 * 4  # the layer's input only: the block inputs are recomputed
    kept = ACDC(100, 50, depth=3, activation="relu", recompute=False).cost((8,))
    assert kept.saved_bytes == 8 * 100 * 4 * 3  # the block inputs: the fused ReLUs need nothing more
    # one op per block: each saves its input (the first the layer's input), each GELU its input too
    assert ACDC(60, 100, depth=3, activation="gelu").cost((8,)).saved_bytes == 8 * 4 * (60 + 2 * 100 + 2 * 100)
    assert ACDC(60, 100, depth=3, activation="gelu", recompute=False).cost((8,)).saved_bytes == 8 * 100 * 4 * (3 + 2)


def _saved_bytes(layer, x):
    """Bytes autograd saves for backward: ``(all, activations)``, activations being the saved tensors whose
    shape ends in the input's batch shape and a feature dimension (the cascade keeps its block outputs in one
    ``(k - 1, *batch, n)`` tensor; the rest are parameter-sized pieces and indices)."""
    total = activations = 0

    def pack(t):
        nonlocal total, activations
        size = t.numel() * t.element_size()
        total += size
        if t.dim() >= x.dim() and t.shape[t.dim() - x.dim() : -1] == x.shape[:-1]:
            activations += size
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return total, activations


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("depth, activation", [(1, None), (4, None), (4, "relu"), (3, "tanh")])
def test_saved_bytes_match_cost_and_stay_within_two_inputs_per_block(depth, activation, recompute):
    layer = ACDC(256, 256, depth=depth, activation=activation, recompute=recompute)
    x = torch.randn(64, 256, requires_grad=True)
    total, activations = _saved_bytes(layer, x)
    assert activations == layer.cost((64,)).saved_bytes
    assert total <= depth * 2 * 64 * 256 * 4


@pytest.mark.parametrize("recompute", [True, False])
def test_flop_counter_sees_the_blocks(recompute):
    from torch.utils.flop_counter import FlopCounterMode

    from structlin.costs import (
        acdc_block_backward_flops,
        acdc_block_flops,
        acdc_coefficient_backward_flops,
        acdc_coefficient_flops,
        acdc_recompute_flops,
    )

    layer = ACDC(1024, 1024, depth=3, bias=False, recompute=recompute, path="fft")
    x = torch.randn(8, 1024, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        layer(x).sum().backward()
    counts = {str(op): c for op, c in counter.get_flop_counts()["Global"].items()}
    assert counts["structlin.acdc_cascade"] == 3 * (8 * acdc_block_flops(1024) + acdc_coefficient_flops(1024))
    # recomputing the inputs of blocks 1 and 2: the first two blocks' maps and irffts again
    recomputed = 8 * acdc_recompute_flops(1024, 3) if recompute else 0
    assert recomputed == (8 * 2 * (6 * 513 + rfft_flops(1024)) if recompute else 0)
    assert counts["structlin.acdc_cascade_backward"] == 3 * (
        8 * acdc_block_backward_flops(1024) + acdc_coefficient_backward_flops(1024)
    ) + recomputed


@pytest.mark.slow
def test_compiled_matches_eager():
    layer = _random_layer(24, 16, depth=3, activation="relu")
    assert_compiled_matches_eager(layer, torch.randn(5, 24, dtype=torch.float64, requires_grad=True))


def test_on_device(device):
    layer = _random_layer(12, 10, depth=3, activation="relu")
    x = torch.randn(4, 12, dtype=torch.float64)
    moved = _random_layer(12, 10, depth=3, activation="relu").to(device)
    moved.load_state_dict(layer.state_dict())
    torch.testing.assert_close(moved(x.to(device)).cpu(), layer(x), rtol=0, atol=1e-10)


def test_acdc_cannot_be_built_exactly_from_a_linear():
    assert ACDC.exact_from_linear is False
    with pytest.raises(TypeError, match="cannot be built from an nn.Linear"):
        ACDC.from_linear(torch.nn.Linear(4, 4))


@pytest.mark.parametrize("activation", [None, "relu", nn.ReLU()])
def test_a_layer_without_activation_or_with_relu_is_one_op(activation):
    layer = ACDC(64, 64, depth=5, activation=activation)
    r = structlin.report(layer, torch.randn(3, 64))
    ops = set(r.by_operator())
    assert {"structlin.acdc_cascade", "structlin.acdc_cascade_backward"} <= ops
    assert not any(op.startswith(("aten.relu", "aten.threshold", "structlin.gather")) for op in ops), ops


def test_acdc_cascade_checks_its_shapes():
    from structlin.transforms.acdc import acdc_cascade

    A, D = torch.ones(3, 8), torch.ones(3, 8)
    x = torch.randn(2, 8)
    torch.testing.assert_close(acdc_cascade(x, A, D), x)  # unit diagonals: every block is the identity
    with pytest.raises(ValueError, match=r"A and D of one shape \(k, n\)"):
        acdc_cascade(torch.randn(2, 8), A, torch.ones(3, 6))
    with pytest.raises(ValueError, match=r"x of shape \(\.\.\., 8\)"):
        acdc_cascade(torch.randn(2, 7), A, D)
    with pytest.raises(ValueError, match=r"permutations of shape \(2, 8\)"):
        perms = torch.stack([torch.randperm(8) for _ in range(3)])
        acdc_cascade(torch.randn(2, 8), A, D, permutations=(perms, perms.argsort(1)))


# --- state: permutations, derived tables, meta device, dtypes ----------------------------------------------------


def _non_permutations(perms: torch.Tensor) -> dict:
    repeated, negative, too_large = perms.clone(), perms.clone(), perms.clone()
    repeated[0, 1] = repeated[0, 0]
    negative[-1, 2] = -1
    too_large[0, 0] = perms.shape[1]
    return {
        "repeated": (repeated, "row 0 has repeated entries"),
        "negative": (negative, rf"row {perms.shape[0] - 1} has entries outside 0 … {perms.shape[1] - 1}"),
        "too large": (too_large, "row 0 has entries outside"),
        "float": (perms.double(), r"got torch.float64 of shape \(2, 8\)"),
        "int32": (perms.int(), r"got torch.int32 of shape \(2, 8\)"),
        "short rows": (perms[:, :-1], r"got torch.int64 of shape \(2, 7\)"),
        "extra row": (torch.cat([perms, perms[:1]]), r"got torch.int64 of shape \(3, 8\)"),
    }


@pytest.mark.parametrize("case", ["repeated", "negative", "too large", "float", "int32", "short rows", "extra row"])
def test_loading_a_non_permutation_fails_naming_the_key_and_changes_nothing(case):
    layer = _random_layer(8, 8, depth=3)
    incoming = _random_layer(8, 8, depth=3).state_dict()
    bad, message = _non_permutations(incoming["permutations"])[case]
    x = torch.randn(4, 8, dtype=torch.float64)
    state, y = {k: v.clone() for k, v in layer.state_dict().items()}, layer(x)
    with pytest.raises(ValueError, match=r"state_dict\['permutations'\] for ACDC must be .*" + message):
        layer.load_state_dict(dict(incoming, permutations=bad))
    for key, value in layer.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert torch.equal(layer(x), y)


def test_a_non_permutation_inside_a_model_is_named_by_its_full_key():
    model = nn.Sequential(nn.Linear(8, 8), ACDC(8, 8, depth=3))
    state = model.state_dict()
    state["1.permutations"] = torch.zeros_like(state["1.permutations"])
    with pytest.raises(ValueError, match=r"state_dict\['1\.permutations'\] for ACDC .* row 0 has repeated entries"):
        model.load_state_dict(state)


@pytest.mark.parametrize("case", ["repeated", "negative", "too large"])
def test_an_edit_into_a_non_permutation_is_refused_at_the_next_call(case):
    layer = _random_layer(8, 8, depth=3)
    x = torch.randn(4, 8, dtype=torch.float64)
    layer(x)
    bad, message = _non_permutations(layer.permutations)[case]
    with torch.no_grad():
        layer.permutations.copy_(bad)
    for call in (lambda: layer(x), layer.to_dense):
        with pytest.raises(ValueError, match="ACDC's buffer 'permutations' must be .*" + message):
            call()


@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
@pytest.mark.parametrize("edit", ["copy_", "data", "load_state_dict"])
def test_edited_permutations_are_followed_forward_and_backward(activation, edit, backend):
    layer = _random_layer(10, 10, depth=3, activation=activation)
    x = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()  # builds the tables from the permutations drawn at construction
    new = torch.stack([torch.randperm(10) for _ in range(2)])
    if edit == "copy_":
        with torch.no_grad():
            layer.permutations.copy_(new)
    elif edit == "data":
        layer.permutations.data = new
    else:
        layer.load_state_dict(dict(layer.state_dict(), permutations=new))
    assert torch.equal(layer.permutations, new)
    x.grad = None
    layer.A.grad = None
    y = layer(x)
    np.testing.assert_allclose(y.detach().numpy(), acdc_scipy_reference(layer, x.detach()), rtol=0, atol=1e-10)
    # the gradients of the edited layer against plain autograd through dct/idct with the new permutations
    from structlin.transforms import dct, idct

    y.square().sum().backward()
    A = layer.A.detach().requires_grad_(True)
    x2 = x.detach().requires_grad_(True)
    v = x2
    for i in range(3):
        v = idct(layer.D.detach()[i] * dct(A[i] * v))
        if i < 2:
            v = v[..., new[i]]
            v = layer.activation(v) if layer.activation is not None else v
    (v + layer.bias.detach()).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.A.grad, A.grad, rtol=0, atol=1e-10)


def test_reset_parameters_keeps_the_permutations_of_a_built_layer():
    layer = ACDC(16, 16, depth=3)
    perms = layer.permutations.clone()
    layer.reset_parameters()
    assert torch.equal(layer.permutations, perms)


class _ShiftedReLU(nn.ReLU):
    def forward(self, x):
        return torch.relu(x - 0.5)


class _CumulativeTanh(nn.Tanh):  # a subclass of an elementwise type that reads the feature order
    def forward(self, x):
        return torch.tanh(x.cumsum(-1) / x.shape[-1])


@pytest.mark.parametrize("activation", [_ShiftedReLU(), _CumulativeTanh()], ids=["relu-subclass", "tanh-subclass"])
def test_activation_subclasses_run_their_own_forward(activation, backend):
    layer = _random_layer(12, 12, depth=3, activation=activation)
    assert not layer._fused_relu
    x = torch.randn(5, 12, dtype=torch.float64)
    np.testing.assert_allclose(layer(x).detach().numpy(), acdc_scipy_reference(layer, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.GELU()], ids=["relu", "gelu"])
def test_hooks_on_the_activation_fire_and_see_natural_feature_order(activation, backend):
    layer = _random_layer(8, 8, depth=3, activation=activation)
    x = torch.randn(4, 8, dtype=torch.float64)
    seen = []
    handle = layer.activation.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    y = layer(x)
    handle.remove()
    assert len(seen) == 2
    A, D, perms = layer.A.detach().numpy(), layer.D.detach().numpy(), layer.permutations.numpy()
    v = scipy.fft.idct(D[0] * scipy.fft.dct(A[0] * x.numpy(), norm="ortho"), norm="ortho")[..., perms[0]]
    np.testing.assert_allclose(seen[0].numpy(), v, rtol=0, atol=1e-12)  # the first block's output, permuted
    np.testing.assert_allclose(y.detach().numpy(), acdc_scipy_reference(layer, x), rtol=0, atol=1e-10)
    assert layer._fused_relu == (type(activation) is nn.ReLU)  # the hook is gone: fused again


def test_a_hooked_relu_is_not_fused_and_a_relu_under_measurement_is():
    layer = ACDC(16, 16, depth=3, activation="relu")
    assert layer._fused_relu
    handle = layer.activation.register_forward_pre_hook(lambda module, args: None)
    assert not layer._fused_relu
    handle.remove()
    with torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None):
        assert layer._fused_relu  # global hooks observe every module; they do not change what runs
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False):  # it registers global module hooks
        assert layer._fused_relu


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64, torch.bool])
def test_unsupported_dtypes_are_refused_at_construction(dtype):
    with pytest.raises(TypeError, match=r"ACDC supports the dtypes float16, bfloat16, float32, float64"):
        ACDC(8, 8, dtype=dtype)


def test_meta_construction_skip_init_and_to_empty():
    layer = ACDC(8, 8, depth=2, device="meta")
    assert layer.permutations.is_meta and layer.A.is_meta
    skipped = torch.nn.utils.skip_init(ACDC, 8, 8, depth=2)
    x = torch.randn(3, 8)
    for call in (lambda: skipped(x), skipped.to_dense, lambda: copy.deepcopy(skipped)(x)):
        with pytest.raises(RuntimeError, match="'permutations' holds uninitialised memory"):
            call()
    torch.manual_seed(4)
    skipped.reset_parameters()
    torch.manual_seed(4)
    normal = ACDC(8, 8, depth=2)
    assert torch.equal(skipped.permutations, normal.permutations) and torch.equal(skipped(x), normal(x))


@pytest.mark.parametrize("name", sorted(ACDC_INITS.names()))
def test_init_strategies_run_on_meta_tensors(name):
    with torch.device("meta"):
        A, D = torch.empty(3, 8), torch.empty(3, 8)
        ACDC_INITS.get(name)().init_(A, D, 2.0)
    assert A.is_meta and D.is_meta
