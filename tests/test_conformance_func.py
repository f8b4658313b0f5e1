"""``torch.func`` transforms and forward-mode AD over every registered layer kind (``layer_cases.CASES``, so a
kind registered later gets these checks without edits).

References are independent of the transforms under test: the reverse-mode Jacobian that
``torch.autograd.functional.jacobian`` takes through the layers' ordinary backward, ``to_dense()`` for linear
maps, plain per-row loops, and for Hessians either the closed form of a linear map or central differences of the
reverse-mode gradient. A central difference along a coordinate is exact up to rounding when the function is a
polynomial of degree at most 2 in that coordinate (every gradient entry is then at most quadratic along the
line). Every kind here is, in its input and in each parameter: dense, ACDC, Fastfood and low-rank maps are
multilinear in their parameters, quadratic layers are degree 2, ReLU cascades are so piecewise; a smooth kind
registered later is within O(h²).
"""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from layer_cases import CASES, float64_layer, is_linear

SHAPES = [(5, 12), (12, 5)]
ROWS = 2
TOL = dict(rtol=1e-9, atol=1e-10)
STEP = 1e-4  # central differences: rounding ~1e-16/STEP; truncation 0 here, O(STEP²) for a smooth kind
DIFFERENCE_TOL = dict(rtol=1e-6, atol=1e-6)
PARAMETER_COLUMNS = 24  # Hessian columns of parameters checked by central differences (each costs 2 gradients)

cases = pytest.mark.parametrize("kind, options, linear", CASES)
shapes = pytest.mark.parametrize("shape", SHAPES, ids=str)


def _randn(*shape, seed):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _trainable(layer):
    """``(names, values)`` of the parameters that require a gradient, ``values`` detached copies."""
    named = [(name, p.detach().clone()) for name, p in layer.named_parameters() if p.requires_grad]
    return tuple(name for name, _ in named), tuple(value for _, value in named)


def _with_parameters(layer, names):
    """``f(x, *values)``: the layer with its trainable parameters replaced by ``values``."""
    return lambda x, *values: functional_call(layer, dict(zip(names, values)), (x,))


def _reverse_jacobians(f, inputs: tuple) -> tuple:
    """``∂f/∂input`` for each input, by ``torch.autograd.functional.jacobian`` (the layers' ordinary backward)."""
    return torch.autograd.functional.jacobian(f, inputs)


def _contract(jacobian: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    out_shape = jacobian.shape[: jacobian.dim() - tangent.dim()]
    return (jacobian.reshape(-1, tangent.numel()) @ tangent.reshape(-1)).reshape(out_shape)


def _setup(kind, options, shape, seed=0):
    layer = float64_layer(kind, options, shape, seed=seed)
    names, values = _trainable(layer)
    x = _randn(ROWS, shape[0], seed=seed + 1)
    return layer, names, values, x


@shapes
@cases
def test_jacfwd_and_jacrev_match_the_reverse_mode_jacobian(kind, options, linear, shape):
    layer, names, values, x = _setup(kind, options, shape)
    f = _with_parameters(layer, names)
    argnums = tuple(range(1 + len(values)))
    expected = _reverse_jacobians(f, (x, *values))
    torch.testing.assert_close(torch.func.jacfwd(f, argnums=argnums)(x, *values), expected, **TOL)
    torch.testing.assert_close(torch.func.jacrev(f, argnums=argnums)(x, *values), expected, **TOL)
    if is_linear(layer, linear):  # ∂y_b/∂x_c = δ_bc W
        dense = torch.einsum("bc,oi->boci", torch.eye(ROWS, dtype=x.dtype), layer.to_dense())
        torch.testing.assert_close(torch.func.jacfwd(layer)(x), dense, **TOL)


@shapes
@cases
def test_vectorized_jacobians_of_torch_autograd_functional(kind, options, linear, shape):
    """``vectorize=True`` runs the backward (reverse mode) or the forward with dual tensors (forward mode) under
    the legacy vmap of ``torch.autograd.functional`` (in the input: that vmap loops over some ops' batches)."""
    layer, _, _, x = _setup(kind, options, shape)
    expected = _reverse_jacobians(layer, x)
    for strategy in ("reverse-mode", "forward-mode"):
        got = torch.autograd.functional.jacobian(layer, x, vectorize=True, strategy=strategy)
        torch.testing.assert_close(got, expected, **TOL)


@shapes
@cases
def test_jvp_and_forward_ad_are_the_jacobian_times_the_tangent(kind, options, linear, shape):
    layer, names, values, x = _setup(kind, options, shape)
    f = _with_parameters(layer, names)
    inputs = (x, *values)
    tangents = tuple(_randn(*t.shape, seed=10 + i) for i, t in enumerate(inputs))
    jacobians = _reverse_jacobians(f, inputs)
    expected = sum(_contract(j, t) for j, t in zip(jacobians, tangents))
    y, tangent = torch.func.jvp(f, inputs, tangents)
    torch.testing.assert_close(y, layer(x), **TOL)
    torch.testing.assert_close(tangent, expected, **TOL)
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(inputs, tangents)]
        dual_tangent = fwAD.unpack_dual(f(*duals)).tangent
        input_tangent = fwAD.unpack_dual(layer(fwAD.make_dual(x, tangents[0]))).tangent
    assert dual_tangent is not None and input_tangent is not None, "the tangent was dropped"
    torch.testing.assert_close(dual_tangent, expected, **TOL)
    torch.testing.assert_close(input_tangent, _contract(jacobians[0], tangents[0]), **TOL)


@shapes
@cases
def test_grad_of_a_scalar_loss(kind, options, linear, shape):
    layer, names, values, x = _setup(kind, options, shape)
    f = _with_parameters(layer, names)

    def loss(x, *values):
        return f(x, *values).square().sum()

    got = torch.func.grad(loss, argnums=tuple(range(1 + len(values))))(x, *values)
    inputs = [t.clone().requires_grad_() for t in (x, *values)]
    expected = torch.autograd.grad(loss(*inputs), inputs)
    torch.testing.assert_close(got, expected, **TOL)


@shapes
@cases
def test_vmap_over_a_batch_is_the_batched_forward(kind, options, linear, shape):
    layer, _, _, x = _setup(kind, options, shape)
    torch.testing.assert_close(torch.func.vmap(layer)(x), layer(x), **TOL)  # each sample an (in_features,) row
    xs = _randn(3, 4, shape[0], seed=5)
    torch.testing.assert_close(torch.func.vmap(layer, in_dims=1, out_dims=1)(xs), layer(xs), **TOL)


@shapes
@cases
def test_vmap_over_stacked_parameter_sets_is_each_model(kind, options, linear, shape):
    """Model ensembling: parameters and buffers of several seeds stacked and vmapped through one module."""
    models = [float64_layer(kind, options, shape, seed=seed) for seed in (0, 1, 2)]
    params, buffers = torch.func.stack_module_state(models)
    x = _randn(ROWS, shape[0], seed=7)

    def run(params, buffers, x):
        return functional_call(models[0], (params, buffers), (x,))

    got = torch.func.vmap(run, in_dims=(0, 0, None))(params, buffers, x)
    torch.testing.assert_close(got, torch.stack([model(x) for model in models]), **TOL)


@shapes
@cases
def test_per_sample_gradients_with_vmap_of_grad(kind, options, linear, shape):
    layer, names, values, _ = _setup(kind, options, shape)
    f = _with_parameters(layer, names)
    xs = _randn(3, shape[0], seed=8)

    def loss(values, row):
        return f(row.unsqueeze(0), *values).square().sum()

    got = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(values, xs)
    for r in range(xs.shape[0]):
        leaves = [v.clone().requires_grad_() for v in values]
        expected = torch.autograd.grad(loss(leaves, xs[r]), leaves)
        torch.testing.assert_close(tuple(g[r] for g in got), expected, **TOL)


def _flat_function(f, shapes):
    """``g(z)``: ``f`` of the tensors of ``shapes`` laid end to end in the vector ``z``."""
    sizes = [torch.Size(s).numel() for s in shapes]
    return lambda z: f(*(part.view(s) for part, s in zip(z.split(sizes), shapes)))


def _central_differences(gradients, z: torch.Tensor, columns) -> torch.Tensor:
    """The Hessian's ``columns``: column ``j`` is ``(∇g(z + h e_j) − ∇g(z − h e_j)) / 2h``, from
    ``gradients(points)``: ``∇g`` at each row of ``points`` ``(k, z.numel())``, by ordinary reverse mode."""
    steps = STEP * torch.eye(z.numel(), dtype=z.dtype)[list(columns)]
    plus, minus = gradients(z + steps), gradients(z - steps)
    return ((plus - minus) / (2 * STEP)).T


@shapes
@cases
def test_hessian_in_the_input(kind, options, linear, shape):
    layer, _, _, x = _setup(kind, options, shape)
    c = _randn(ROWS, shape[1], seed=9)
    got = torch.func.hessian(lambda x: (c * layer(x)).sum())(x).reshape(x.numel(), x.numel())

    def gradients(points):  # rows are independent: one call for every point
        points = points.view(-1, *x.shape).clone().requires_grad_()
        return torch.autograd.grad((c * layer(points)).sum(), points)[0].flatten(1)

    torch.testing.assert_close(got, got.T, **TOL)
    torch.testing.assert_close(got, _central_differences(gradients, x.flatten(), range(x.numel())), **DIFFERENCE_TOL)


@pytest.mark.parametrize("shape", [(6, 4)], ids=str)
@cases
def test_hessian_in_input_and_parameters(kind, options, linear, shape):
    layer, names, values, x = _setup(kind, options, shape)
    f = _with_parameters(layer, names)
    c = _randn(ROWS, shape[1], seed=9)
    inputs = (x, *values)
    g = _flat_function(lambda *inputs: (c * f(*inputs)).sum(), [t.shape for t in inputs])
    z = torch.cat([t.reshape(-1) for t in inputs])
    got = torch.func.hessian(g)(z)

    def gradients(points):
        leaves = [point.clone().requires_grad_() for point in points]
        return torch.stack([torch.autograd.grad(g(leaf), leaf)[0] for leaf in leaves])

    # every input column, and PARAMETER_COLUMNS spread over the parameters (with symmetry, checked, every
    # row of the Hessian meets some of them)
    params = range(x.numel(), z.numel())
    columns = [*range(x.numel()), *params[:: max(1, len(params) // PARAMETER_COLUMNS)]]
    torch.testing.assert_close(got, got.T, **TOL)
    torch.testing.assert_close(got[:, columns], _central_differences(gradients, z, columns), **DIFFERENCE_TOL)


@shapes
@cases
def test_hessian_of_a_linear_layer_is_its_gram_matrix(kind, options, linear, shape):
    layer, _, _, x = _setup(kind, options, shape)
    if not is_linear(layer, linear):
        pytest.skip("not a linear map")
    dense = layer.to_dense()
    # ½ Σ_b ‖W x_b + bias‖²: ∂²/∂x_b∂x_c = δ_bc WᵀW
    got = torch.func.hessian(lambda x: 0.5 * layer(x).square().sum())(x)
    expected = torch.einsum("bc,ij->bicj", torch.eye(ROWS, dtype=x.dtype), dense.T @ dense)
    torch.testing.assert_close(got, expected, **TOL)
