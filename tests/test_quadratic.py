import pytest
import torch
from torch import nn

import structlin
from structlin import Quadratic, StructuredLayer, param_groups
from structlin.layers.branches import branch_needs_rank
from structlin.strategies import QUADRATIC_INITS, QuadraticInit

from helpers import assert_compiled_matches_eager

FORMS = ["xu", "fan", "lowrank"]
RANK = 3


def _linear_kinds() -> list[str]:
    """Registered kinds that are linear maps (their ``to_dense()`` works): every one can be a branch."""
    kinds = []
    for kind in structlin.available_layers():
        options = {"rank": 2} if branch_needs_rank(kind) else {}
        try:
            StructuredLayer.create(kind, 4, 4, **options).to_dense()
        except TypeError:
            continue
        kinds.append(kind)
    return kinds


BRANCHES = ["dense", *_linear_kinds()]
OPTIONS = {"acdc": {"depth": 2}}


def _layer(form, branch="dense", in_features=6, out_features=5, **kwargs) -> Quadratic:
    kwargs.setdefault("dtype", torch.float64)
    options = {**OPTIONS.get(branch, {}), **kwargs}
    return Quadratic(in_features, out_features, form=form, branch=branch, rank=RANK, **options)


def _randomize(layer: Quadratic) -> Quadratic:
    with torch.no_grad():  # far from any special start, so a mixed-up part cannot hide
        for p in layer.parameters():
            p.normal_()
    return layer


def _affine(layer: Quadratic, name: str, v: torch.Tensor) -> torch.Tensor:
    weight, bias = layer.part_dense(name)
    return v @ weight.T + (0 if bias is None else bias)


def _reference(layer: Quadratic, x: torch.Tensor) -> torch.Tensor:
    """The form's formula with each part as its dense equivalent (``to_dense()`` of each branch layer)."""
    part = lambda name, v: _affine(layer, name, v)  # noqa: E731
    if layer.form.name == "xu":
        return part("a", x) * part("b", x) + part("c", x)
    if layer.form.name == "fan":
        return part("r", x) * part("g", x) + part("b", x * x)
    return part("w", x) + part("p", part("u", x) * part("v", x))


def test_dense_forms_match_plain_formulas():
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64)
    layer = _randomize(_layer("xu"))
    xu = layer.branches.x
    y = layer(x)
    expected = (x @ xu.weight_a.T + xu.bias_a) * (x @ xu.weight_b.T + xu.bias_b) + x @ xu.weight_c.T + xu.bias_c
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)

    fan = _randomize(_layer("fan"))
    g, s = fan.branches.x, fan.branches.x_x
    expected = (x @ g.weight_r.T + g.bias_r) * (x @ g.weight_g.T + g.bias_g) + (x * x) @ s.weight_b.T + s.bias_b
    torch.testing.assert_close(fan(x), expected, rtol=0, atol=1e-12)

    low = _randomize(_layer("lowrank"))
    g, p = low.branches.x, low.branches.u_v
    assert g.weight_u.shape == g.weight_v.shape == (RANK, 6) and p.weight_p.shape == (5, RANK)
    expected = x @ g.weight_w.T + g.bias_w + ((x @ g.weight_u.T) * (x @ g.weight_v.T)) @ p.weight_p.T
    torch.testing.assert_close(low(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_every_branch_matches_its_dense_equivalent(form, branch):
    torch.manual_seed(1)
    layer = _randomize(_layer(form, branch))
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (2, 3, 5)
    torch.testing.assert_close(y, _reference(layer, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_from_linear_is_exact(form, branch):
    torch.manual_seed(2)
    linear = nn.Linear(6, 5).double()
    layer = Quadratic.from_linear(linear, form=form, branch=branch, rank=RANK, **OPTIONS.get(branch, {}))
    x = torch.randn(7, 6, dtype=torch.float64) * 10
    assert (layer(x) - linear(x)).abs().max().item() == 0
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    assert Quadratic.exact_from_linear is True


def test_from_linear_keeps_float32_and_rejects_bad_arguments():
    linear = nn.Linear(8, 3)
    layer = Quadratic.from_linear(linear, form="xu")
    assert next(layer.parameters()).dtype == torch.float32
    x = torch.randn(5, 8)
    assert torch.equal(layer(x), linear(x))
    with pytest.raises(TypeError, match="expects an nn.Linear"):
        Quadratic.from_linear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="takes bias from the nn.Linear, which has a bias"):
        Quadratic.from_linear(linear, bias=False)
    with pytest.raises(ValueError, match="which has no bias"):
        Quadratic.from_linear(nn.Linear(3, 3, bias=False), bias=True)
    with pytest.raises(TypeError, match="sets init"):
        Quadratic.from_linear(linear, init="random")


#: with bias=False, the parts that keep their bias: the second factor of the product, which starts at 1
KEPT_BIASES = {"xu": {"b"}, "fan": {"g"}, "lowrank": set()}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_bias_false_leaves_no_constant_term(form, branch):
    torch.manual_seed(6)
    layer = _layer(form, branch, bias=False)
    kept = {spec.name for spec in layer.form.parts if layer.part_dense(spec.name)[1] is not None}
    assert kept == KEPT_BIASES[form]
    first = next(s.name for s in layer.form.parts if s.first_order)
    assert layer.part_dense(first)[1] is None
    with pytest.raises(ValueError, match=f"part '{first}' has no bias, so it cannot output the constant 1"):
        layer.set_constant(first, 1.0)
    _randomize(layer)
    zero = torch.zeros(3, 6, dtype=torch.float64)
    assert torch.equal(layer(zero), torch.zeros(3, 5, dtype=torch.float64))
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _reference(layer, x), rtol=0, atol=1e-10)
    assert layer.cost((4,)).params == sum(p.numel() for p in layer.parameters())


def test_bias_false_dense_forms_match_plain_formulas():
    torch.manual_seed(7)
    x = torch.randn(4, 6, dtype=torch.float64)
    layer = _randomize(_layer("xu", bias=False))
    xu = layer.branches.x
    assert xu.bias_a is None and xu.bias_c is None
    expected = (x @ xu.weight_a.T) * (x @ xu.weight_b.T + xu.bias_b) + x @ xu.weight_c.T
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)

    fan = _randomize(_layer("fan", bias=False))
    g, s = fan.branches.x, fan.branches.x_x
    assert g.bias_r is None and s.bias_b is None
    expected = (x @ g.weight_r.T) * (x @ g.weight_g.T + g.bias_g) + (x * x) @ s.weight_b.T
    torch.testing.assert_close(fan(x), expected, rtol=0, atol=1e-12)

    low = _randomize(_layer("lowrank", bias=False))
    g, p = low.branches.x, low.branches.u_v
    assert g.bias_w is None
    expected = x @ g.weight_w.T + ((x @ g.weight_u.T) * (x @ g.weight_v.T)) @ p.weight_p.T
    torch.testing.assert_close(low(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_from_linear_without_bias_is_exact(form, branch):
    torch.manual_seed(8)
    linear = nn.Linear(6, 5, bias=False).double()
    layer = Quadratic.from_linear(linear, form=form, branch=branch, rank=RANK, **OPTIONS.get(branch, {}))
    x = torch.randn(7, 6, dtype=torch.float64) * 10
    assert (layer(x) - linear(x)).abs().max().item() == 0
    kept = {spec.name for spec in layer.form.parts if layer.part_dense(spec.name)[1] is not None}
    assert kept == KEPT_BIASES[form]
    linear32 = nn.Linear(8, 3, bias=False)
    x32 = torch.randn(5, 8)
    assert torch.equal(Quadratic.from_linear(linear32, form=form, rank=RANK)(x32), linear32(x32))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_linear_start_is_exactly_the_first_order_map(form, branch, bias):
    torch.manual_seed(3)
    layer = _layer(form, branch, bias=bias)
    x = torch.randn(4, 6, dtype=torch.float64)
    first = {"xu": "a", "fan": "r", "lowrank": "w"}[form]
    torch.testing.assert_close(layer(x), layer.branches[layer._group_of[first]](x)[first], rtol=0, atol=0)


def _steps_until_every_gradient_moves(layer: Quadratic, steps: int = 2) -> set[str]:
    """Names of parameters whose gradient stayed exactly zero in each of ``steps`` SGD steps."""
    torch.manual_seed(4)
    x = torch.randn(16, layer.in_features, dtype=torch.float64)
    target = torch.randn(16, layer.out_features, dtype=torch.float64)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    still_zero = {name for name, _ in layer.named_parameters()}
    for _ in range(steps):
        optimizer.zero_grad()
        (layer(x) - target).square().mean().backward()
        still_zero -= {name for name, p in layer.named_parameters() if p.grad is not None and p.grad.abs().max() > 0}
        optimizer.step()
    return still_zero


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_every_parameter_gets_a_gradient_within_two_steps(form, branch):
    assert _steps_until_every_gradient_moves(_layer(form, branch)) == set()
    assert _steps_until_every_gradient_moves(_layer(form, branch, bias=False)) == set()
    for bias in (True, False):
        linear = nn.Linear(6, 5, bias=bias).double()
        from_linear = Quadratic.from_linear(linear, form=form, branch=branch, rank=RANK, **OPTIONS.get(branch, {}))
        assert _steps_until_every_gradient_moves(from_linear) == set()


def test_dense_linear_start_moves_every_parameter_on_the_first_step_except_lowrank_factors():
    for form, late in (("xu", set()), ("fan", set()), ("lowrank", {"branches.x.weight_u", "branches.x.weight_v"})):
        assert _steps_until_every_gradient_moves(_layer(form), steps=1) == late


def test_a_single_fan_neuron_is_the_squared_norm():
    layer = Quadratic(5, 1, form="fan", init="random", dtype=torch.float64)
    with torch.no_grad():
        for name in ("r", "g"):
            layer.set_constant(name, 0.0)
        layer.branches.x_x.weight_b.fill_(1.0)
        layer.branches.x_x.bias_b.zero_()
    x = torch.randn(100, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[:, 0], x.square().sum(-1), rtol=1e-15, atol=0)  # up to summation order
    grid = torch.randint(-9, 10, (100, 5)).double()  # integers: every sum is exact
    assert torch.equal(layer(grid)[:, 0], grid.square().sum(-1))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", ["dense", "acdc"])
def test_gradcheck(form, branch):
    torch.manual_seed(5)
    layer = _randomize(_layer(form, branch, in_features=4, out_features=3))
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)

    def f(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    # fast mode checks random projections of the Jacobian: one pass per input tensor, not per element
    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=branch != "dense")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_cost_counts_parameters_and_matmuls(form, branch):
    from torch.utils.flop_counter import FlopCounterMode

    layer = _layer(form, branch, dtype=torch.float32)
    cost = layer.cost((8,))
    assert cost.params == sum(p.numel() for p in layer.parameters())
    assert cost.forward_flops > 0 and cost.backward_flops > cost.forward_flops
    if branch == "dense":  # the counter sees the matmuls, the cost adds elementwise ops on top
        x = torch.randn(8, 6, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            layer(x)
        forward_matmuls = counter.get_total_flops()
        sizes = {"xu": 3 * 5 * 6, "fan": 2 * 5 * 6 + 5 * 6, "lowrank": (5 + 2 * RANK) * 6 + 5 * RANK}[form]
        assert forward_matmuls == 2 * 8 * sizes
        # one bias add over every output of a group with a bias: the lowrank form's u, v add zeros
        biases = {"xu": 3 * 5, "fan": 2 * 5 + 5, "lowrank": 5 + 2 * RANK}[form]
        elementwise = {"xu": 2 * 5, "fan": 6 + 2 * 5, "lowrank": RANK + 5}[form]
        assert cost.forward_flops == forward_matmuls + 8 * (biases + elementwise)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("form", FORMS)
def test_cost_of_a_from_linear_layer_equals_the_report(form, bias):
    """from_linear computes the first-order part in its own group, so ``x`` is read by one more matmul."""
    torch.manual_seed(9)
    layer = Quadratic.from_linear(nn.Linear(6, 5, bias=bias), form=form, branch="acdc", rank=RANK, depth=1)
    for batch in [(4,), (2, 3), ()]:
        r = structlin.report(layer, torch.randn(*batch, 6))
        assert not r.unsupported()
        assert r.total == layer.cost(batch)


@pytest.mark.parametrize("form", FORMS)
def test_saved_bytes_match_cost_for_dense_branches(form):
    layer = _layer(form, dtype=torch.float32)
    x = torch.randn(9, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        layer(x)
    activations = sum(t.numel() * t.element_size() for t in saved if t.dim() and t.shape[0] == 9)
    assert activations == layer.cost((9,)).saved_bytes


def test_to_dense_raises_and_part_dense_works():
    layer = _layer("fan", "acdc")
    with pytest.raises(TypeError, match="not a linear map"):
        layer.to_dense()
    weight, bias = layer.part_dense("g")
    assert weight.shape == (5, 6) and torch.equal(weight, torch.zeros(5, 6, dtype=torch.float64))
    assert torch.equal(bias, torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown part 'z'"):
        layer.part_dense("z")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"form": "cubic"}, ValueError, "unknown quadratic form 'cubic'; valid names: fan, lowrank, xu"),
        ({"branch": "nope"}, ValueError, "unknown branch 'nope'; valid names: .*acdc.*dense.*lowrank"),
        ({"form": "lowrank"}, ValueError, "rank=<positive int> is required for form='lowrank'"),
        ({"branch": "lowrank"}, ValueError, "rank=<positive int> is required for branch='lowrank'"),
        ({"form": "lowrank", "rank": 0}, ValueError, "rank must be a positive int"),
        ({"form": "xu", "rank": 1.5}, ValueError, "rank must be a positive int"),
        ({"init": "nope"}, ValueError, "valid names: linear-start, random"),
        ({"depth": 2}, TypeError, "'dense' branch takes no options"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs, error, message):
    with pytest.raises(error, match=message):
        Quadratic(6, 5, **kwargs)


def test_bad_inputs():
    layer = Quadratic(8, 4)
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        layer(torch.randn(2, 7))
    with pytest.raises(TypeError, match="float32 inputs"):
        layer(torch.randn(2, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 8, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("branch", ["dense", "acdc"])
def test_half_inputs_give_half_outputs(dtype, branch):
    layer = Quadratic(16, 8, form="xu", branch=branch, init="random")
    x = torch.randn(3, 16).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, layer(x.float()).to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_state_dict_round_trip(form, branch):
    torch.manual_seed(6)
    a = _randomize(_layer(form, branch))
    torch.manual_seed(7)
    b = _randomize(_layer(form, branch))
    x = torch.randn(3, 6, dtype=torch.float64)
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_batch_shapes_and_repr():
    layer = Quadratic(6, 4, form="lowrank", rank=2, branch="acdc", depth=2)
    assert layer(torch.randn(0, 6)).shape == (0, 4)
    assert layer(torch.randn(6)).shape == (4,)
    assert layer(torch.randn(2, 3, 6)).shape == (2, 3, 4)
    text = repr(layer)
    assert "form='lowrank'" in text and "branch='acdc'" in text and "rank=2" in text


def test_param_groups_split_quadratic_parameters():
    model = nn.Sequential(nn.Linear(4, 6), Quadratic(6, 5, form="fan"), nn.ReLU(),
                          Quadratic(5, 2, form="lowrank", rank=2))
    model[0].bias.requires_grad_(False)
    groups = param_groups(model, lr=0.1, quadratic_lr_scale=0.01, weight_decay=0.0)
    assert [g["lr"] for g in groups] == [0.1, 0.1 * 0.01] and all(g["weight_decay"] == 0.0 for g in groups)
    names = {id(p): n for n, p in model.named_parameters()}
    slow = {names[id(p)] for p in groups[1]["params"]}
    fast = {names[id(p)] for p in groups[0]["params"]}
    assert slow == {"1.branches.x.weight_g", "1.branches.x.bias_g", "1.branches.x_x.weight_b", "1.branches.x_x.bias_b",
                    "3.branches.x.weight_u", "3.branches.x.weight_v", "3.branches.u_v.weight_p"}
    assert fast == {"0.weight", "1.branches.x.weight_r", "1.branches.x.bias_r", "3.branches.x.weight_w",
                    "3.branches.x.bias_w"}
    torch.optim.Adam(groups)  # a valid optimizer configuration
    with pytest.raises(ValueError, match="quadratic_lr_scale must be > 0"):
        param_groups(model, lr=0.1, quadratic_lr_scale=0)
    default = param_groups(model, quadratic_lr_scale=0.5)  # the call: lr defaults to 1e-3
    assert [g["lr"] for g in default] == [1e-3, 0.5e-3]


def test_register_a_user_init():
    @QUADRATIC_INITS.register("all-constant-test")
    class AllConstant(QuadraticInit):
        def init_(self, layer):
            for part in layer.form.parts:
                layer.set_constant(part.name, 2.0)

    layer = Quadratic(3, 2, form="xu", init="all-constant-test")
    assert torch.equal(layer(torch.randn(4, 3)), torch.full((4, 2), 2.0 * 2.0 + 2.0))


def test_registered_as_a_kind():
    layer = StructuredLayer.create("quadratic", 4, 3, form="xu")
    assert isinstance(layer, Quadratic)


@pytest.mark.slow
@pytest.mark.parametrize("form, branch", [("fan", "dense"), ("lowrank", "acdc"), ("xu", "lowrank")])
def test_compiled_matches_eager(form, branch):
    layer = _randomize(_layer(form, branch))
    assert_compiled_matches_eager(layer, torch.randn(5, 6, dtype=torch.float64, requires_grad=True))


def test_on_device(device):
    torch.manual_seed(8)
    layer = _randomize(_layer("fan", "acdc"))
    moved = _layer("fan", "acdc").to(device)
    moved.load_state_dict(layer.state_dict())
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(moved(x.to(device)).cpu(), layer(x), rtol=0, atol=1e-10)


def test_non_contiguous_inputs():
    layer = _randomize(_layer("fan", "acdc"))
    base = torch.randn(6, 10, dtype=torch.float64)
    for x in (base.T, base[:, ::2].T, base[:1, :6].expand(3, 6)):
        torch.testing.assert_close(layer(x), layer(x.contiguous()), rtol=0, atol=0)


def test_a_user_form_and_a_user_branch_kind():
    from structlin.layers.quadratic_forms import QUADRATIC_FORMS, PartSpec, QuadraticForm
    from structlin.costs import Cost

    @QUADRATIC_FORMS.register("product-test")
    class Product(QuadraticForm):
        name = "product-test"
        parts = (PartSpec("a", "x", "out", True, first_order=True), PartSpec("b", "x", "out", True, start=1.0))

        def combine(self, run, x):
            o = run("x", x)
            return o["a"] * o["b"]

        def elementwise_cost(self, rows, in_features, out_features, rank, itemsize):
            return Cost(0, rows * out_features, 2 * rows * out_features, 2 * rows * out_features * itemsize)

    @structlin.register_layer("plain-dense-test")
    class Dense(StructuredLayer):
        def __init__(self, in_features, out_features, *, bias=True, device=None, dtype=None):
            super().__init__(in_features, out_features)
            self.inner = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)

        def reset_parameters(self):
            self.inner.reset_parameters()

        def forward(self, x):
            return self.inner(x)

        def to_dense(self):
            return self.inner.weight.detach().clone()

    try:
        layer = Quadratic(4, 3, form="product-test", branch="plain-dense-test", dtype=torch.float64)
        x = torch.randn(5, 4, dtype=torch.float64)
        torch.testing.assert_close(layer(x), _affine(layer, "a", x), rtol=0, atol=0)  # linear start
        _randomize(layer)
        torch.testing.assert_close(layer(x), _affine(layer, "a", x) * _affine(layer, "b", x), rtol=0, atol=1e-12)
    finally:  # later tests (and the distributed workers, which never see it) iterate the registered kinds
        structlin.unregister_layer("plain-dense-test")
        QUADRATIC_FORMS.unregister("product-test")


@pytest.mark.parametrize("init", ["linear-start", "random"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_meta_build_then_to_empty_and_seeded_reset_equals_a_normal_build(form, branch, init):
    """Structured branches draw their permutations and diagonals when built, before the quadratic init; a
    seeded reset of a layer materialised from the meta device draws in that same order."""
    layer = _layer(form, branch, init=init, device="meta")
    assert all(t.is_meta for t in layer.state_dict().values())
    layer.to_empty(device="cpu")
    torch.manual_seed(8)
    layer.reset_parameters()
    torch.manual_seed(8)
    normal = _layer(form, branch, init=init)
    for key, value in normal.state_dict().items():
        assert torch.equal(layer.state_dict()[key], value), key
    x = torch.randn(3, 6, dtype=torch.float64)
    assert torch.equal(layer(x), normal(x))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int32, torch.bool])
def test_unsupported_dtypes_are_refused_before_any_branch_is_built(dtype):
    with pytest.raises(TypeError, match="Quadratic supports the dtypes float16, bfloat16, float32, float64"):
        Quadratic(6, 5, form="xu", branch="acdc", dtype=dtype)
