"""ACDC as its authors and pytorch-acdc wrote it: biases after the diagonals, their initialization, the riffle.

References written here, in float64:

- the authors' block (their Torch module ``FastACDC``): ``y = C⁻¹ (D ⊙ C (A ⊙ x + a) + d)`` with ``C`` the
  orthonormal DCT-II (``helpers.acdc_scipy_reference`` runs it with scipy);
- pytorch-acdc's ``StackedLinearACDC(in, out, n_layers, bias, original=True)`` (MIT): ``n_layers`` of its
  ``LinearACDC(original=True)``, each followed by its ``Riffle``. A ``LinearACDC`` tiles its input
  ``out // in`` times (``x.repeat``), builds its matrix as ``(A ⊙ dct(I)) @ (D ⊙ idct(I))`` with torch-dct's
  unnormalized transforms and ``A``, ``D`` of shape ``(out, 1)``, and applies it with ``F.linear``; only the
  last layer has a bias.
"""

import pickle

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
import torch_dct

import structlin
from structlin import ACDC
from structlin.layers.acdc import riffle_permutation
from structlin.strategies.init import Authors
from structlin.transforms.acdc import acdc_cascade

from helpers import acdc_scipy_reference


def _random_affine_layer(*args, **kwargs) -> ACDC:
    layer = ACDC(*args, diagonal_bias=True, dtype=torch.float64, **kwargs)
    with torch.no_grad():  # far from the start, so that a misplaced bias cannot hide
        for parameter in layer.parameters():
            parameter.normal_()
    return layer


# ------------------------------------------------------------------------------------------ diagonal biases


@pytest.mark.parametrize("in_features, out_features", [(8, 8), (5, 12), (12, 5), (7, 7), (1, 1), (16, 16)])
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
@pytest.mark.parametrize("permute", [True, "riffle", False])
def test_diagonal_biases_follow_the_authors_formula(in_features, out_features, activation, permute, backend):
    layer = _random_affine_layer(in_features, out_features, depth=3, activation=activation, permute=permute)
    x = torch.randn(37, in_features, dtype=torch.float64)  # not a multiple of the native kernels' chunk
    np.testing.assert_allclose(layer(x).detach().numpy(), acdc_scipy_reference(layer, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("recompute", [True, False])
def test_the_dense_path_and_the_cascade_agree_with_diagonal_biases(recompute, backend):
    fft = _random_affine_layer(16, 16, depth=3, path="fft", recompute=recompute)
    dense = ACDC(16, 16, depth=3, path="dense", diagonal_bias=True, recompute=recompute, dtype=torch.float64)
    dense.load_state_dict(fft.state_dict())
    x = torch.randn(9, 16, dtype=torch.float64)
    outputs, gradients = [], []
    for layer in (fft, dense):
        y = layer(x)
        outputs.append(y)
        gradients.append(torch.autograd.grad(y.square().sum(), list(layer.parameters())))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-10)
    for a, b in zip(*gradients):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_an_affine_cascade_is_its_dense_weight_plus_its_dense_bias():
    layer = _random_affine_layer(6, 10, depth=4)
    x = torch.randn(5, 6, dtype=torch.float64)
    W, b = layer.to_dense(), layer.dense_bias()
    torch.testing.assert_close(layer(x), x @ W.T + b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(b.numpy(), acdc_scipy_reference(layer, torch.zeros(1, 6))[0], rtol=0, atol=1e-12)
    assert not torch.allclose(b, layer.bias)  # the diagonal biases reach the output


@pytest.mark.parametrize("n", [2, 4, 8, 16])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("recompute", [True, False])
def test_cascade_offsets_gradcheck(n, relu, recompute, backend):
    from structlin.layers.acdc import _gathers

    k = 3
    tables = _gathers(n, n, n, torch.device("cpu"))
    perms = torch.stack([torch.randperm(n) for _ in range(k - 1)])
    index = tables.unorder[perms.index_select(1, tables.order)]
    options = dict(gather_in=tables.gather_in, gather_out=tables.gather_out, permutations=(index, index.argsort(1)),
                   relu=relu, recompute=recompute)
    inputs = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for shape in ((19, n), (k, n), (k, n), (k, n))]

    def cascade(x, A, D, offsets):
        return acdc_cascade(x, A, D, offsets=offsets, **options)

    assert torch.autograd.gradcheck(cascade, inputs)


def test_offsets_must_have_the_diagonals_shape():
    x, A = torch.randn(2, 8), torch.randn(3, 8)
    with pytest.raises(ValueError, match=r"offsets of shape \(3, 8\)"):
        acdc_cascade(x, A, A, offsets=torch.randn(2, 8))


def test_diagonal_biases_run_inside_the_cascade_op():
    """Per row the layer runs the cascade op and the output bias, as without diagonal biases: the offsets are
    computed from the parameters once per call, so no other op's FLOPs grow with the batch."""

    def per_row_growth(diagonal_bias):
        torch.manual_seed(0)
        layer = ACDC(64, 64, depth=4, activation="relu", diagonal_bias=diagonal_bias)
        counts = [structlin.report(layer, torch.randn(rows, 64)).by_operator() for rows in (50, 100)]
        assert {"structlin.acdc_cascade", "structlin.acdc_cascade_backward"} <= set(counts[0])
        growth = {op: tuple(b - a for a, b in zip(counts[0].get(op, (0, 0)), counts[1][op])) for op in counts[1]}
        return {op: g for op, g in growth.items() if any(g) and not op.startswith("structlin.acdc_cascade")}

    plain = per_row_growth(False)
    assert plain == {"aten.add": (50 * 64, 0), "aten.sum": (0, 50 * 64)}  # the output bias and its gradient
    assert per_row_growth(True) == plain


def test_saved_bytes_do_not_grow_with_diagonal_biases():
    def batch_bytes(layer, rows):
        saved = 0

        def pack(t):
            nonlocal saved
            saved += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(torch.randn(rows, 128, requires_grad=True))
        return saved

    layer = ACDC(128, 128, depth=4, diagonal_bias=True, path="fft")
    # what grows with the batch is the layer's input alone (recompute), 4 bytes per element
    assert batch_bytes(layer, 200) - batch_bytes(layer, 100) == 100 * 128 * 4
    assert layer.cost((100,)).saved_bytes == 100 * 128 * 4


def test_state_dict_round_trip_with_diagonal_biases():
    layer = _random_affine_layer(12, 12, depth=3, permute="riffle", activation="relu")
    state = layer.state_dict()
    assert {"A_bias", "D_bias", "permutations"} <= set(state)
    other = ACDC(12, 12, depth=3, permute="riffle", activation="relu", diagonal_bias=True, dtype=torch.float64)
    other.load_state_dict(state)
    x = torch.randn(4, 12, dtype=torch.float64)
    assert torch.equal(other(x), layer(x))
    assert torch.equal(pickle.loads(pickle.dumps(layer))(x), layer(x))
    with pytest.raises(RuntimeError, match="A_bias"):  # a layer without them cannot take them silently
        ACDC(12, 12, depth=3, dtype=torch.float64).load_state_dict(state)


def test_diagonal_biases_start_at_zero_and_reset_to_zero():
    layer = ACDC(10, 10, depth=2, diagonal_bias=True)
    assert torch.equal(layer.A_bias, torch.zeros(2, 10)) and torch.equal(layer.D_bias, torch.zeros(2, 10))
    x = torch.randn(3, 10)
    plain = ACDC(10, 10, depth=2)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.endswith("_bias")}, strict=False)
    torch.testing.assert_close(layer(x), plain(x))  # zero biases: the plain cascade
    with torch.no_grad():
        layer.A_bias.fill_(1.0)
    layer.reset_parameters()
    assert torch.equal(layer.A_bias, torch.zeros(2, 10))
    assert ACDC(4, 4).A_bias is None and ACDC(4, 4).D_bias is None
    assert "diagonal_bias=True" in repr(layer) and "diagonal_bias" not in repr(plain)


@pytest.mark.parametrize("size", [32, 600])  # the offsets through the DCT matrix, and through the transforms
def test_cost_counts_the_diagonal_biases(size):
    from structlin.layers.acdc import OFFSETS_MATRIX_MAX

    assert (size <= OFFSETS_MATRIX_MAX) == (size == 32)
    plain = ACDC(size, size, depth=3, path="fft")
    affine = ACDC(size, size, depth=3, path="fft", diagonal_bias=True)
    assert affine.cost().params == plain.cost().params + 2 * 3 * size
    r = structlin.report(affine, torch.randn(7, size))
    assert r.total == affine.cost((7,))


@pytest.mark.parametrize("size", [16, 600])
def test_block_offsets_are_the_authors_constant(size):
    layer = _random_affine_layer(size, size, depth=2)
    A, D, a, d = (t.detach().numpy() for t in (layer.A, layer.D, layer.A_bias, layer.D_bias))
    expected = scipy.fft.idct(D * scipy.fft.dct(a, norm="ortho", axis=-1) + d, norm="ortho", axis=-1)
    np.testing.assert_allclose(layer.block_offsets().detach().numpy(), expected, rtol=0, atol=1e-12)
    assert ACDC(8, 8).block_offsets() is None


def test_half_precision_with_diagonal_biases_computes_in_float32():
    layer = _random_affine_layer(16, 16, depth=2)
    half = ACDC(16, 16, depth=2, diagonal_bias=True, dtype=torch.bfloat16)
    half.load_state_dict(layer.state_dict())
    x = torch.randn(3, 16, dtype=torch.float64)
    y = half(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    reference = acdc_scipy_reference(half, x.to(torch.bfloat16).double())
    np.testing.assert_allclose(y.double().detach().numpy(), reference, rtol=0.05, atol=0.05)


# ------------------------------------------------------------------------------------------ the authors' start


def test_authors_init_by_name_is_exactly_one():
    layer = ACDC(8, 8, depth=3, init="authors", diagonal_bias=True)
    assert torch.equal(layer.A, torch.ones(3, 8)) and torch.equal(layer.D, torch.ones(3, 8))
    layer = ACDC(8, 8, depth=3, init="authors", permute=False)
    x = torch.randn(4, 8)
    torch.testing.assert_close(layer(x), x, rtol=0, atol=1e-6)  # the identity


def test_authors_noise_and_signs():
    torch.manual_seed(0)
    layer = ACDC(256, 256, depth=4, init=Authors(noise=0.01))
    for diagonal in (layer.A, layer.D):
        deviation = diagonal - 1
        assert deviation.abs().max() <= 0.01 and deviation.abs().max() > 0.009
        assert abs(deviation.mean()) < 1e-3  # uniform on [−0.01, 0.01]: mean 0, sd 0.0058 / √1024
    signed = ACDC(256, 256, depth=4, init=Authors(signs=True))
    for diagonal in (signed.A, signed.D):
        assert set(diagonal.unique().tolist()) == {-1.0, 1.0}
        assert 0.4 < (diagonal > 0).double().mean() < 0.6
    both = ACDC(256, 256, depth=4, init=Authors(noise=0.01, signs=True))
    assert ((both.A.abs() - 1).abs() <= 0.01).all() and (both.A < 0).any()
    assert repr(Authors(noise=0.01, signs=True)) == "Authors(noise=0.01, signs=True)"


@pytest.mark.parametrize("noise", [-0.1, "0.01", True, float("nan")])
def test_authors_noise_must_be_a_non_negative_number(noise):
    with pytest.raises(ValueError, match="noise must be a number >= 0"):
        Authors(noise=noise)


# ------------------------------------------------------------------------------------------ the riffle


def test_riffle_permutation_is_pytorch_acdcs_riffle():
    x = torch.arange(12.0).reshape(1, 12)
    theirs = x.reshape(1, 6, 2).permute(0, 2, 1).reshape(1, 12)  # pytorch-acdc's Riffle on an even size
    assert torch.equal(x[:, riffle_permutation(12)], theirs)
    assert riffle_permutation(5).tolist() == [0, 2, 4, 1, 3]  # odd sizes: evens, then odds


def test_permute_riffle_fills_the_buffer_and_draws_nothing():
    torch.manual_seed(3)
    layer = ACDC(10, 10, depth=4, permute="riffle")
    after_riffle = torch.rand(1)
    torch.manual_seed(3)
    ACDC(10, 10, depth=4, permute=False)
    assert torch.equal(torch.rand(1), after_riffle)  # the same draws as without permutations
    assert torch.equal(layer.permutations, riffle_permutation(10).expand(3, 10))
    assert "permute='riffle'" in repr(layer)
    np.testing.assert_allclose(layer(torch.ones(2, 10)).detach().numpy(), acdc_scipy_reference(layer, torch.ones(2, 10)),
                               rtol=0, atol=1e-5)


def test_riffle_survives_meta_construction_and_reset():
    layer = ACDC(8, 8, depth=3, permute="riffle", device="meta").to_empty(device="cpu")
    layer.reset_parameters()
    assert torch.equal(layer.permutations, riffle_permutation(8).expand(2, 8))


@pytest.mark.parametrize("permute", ["random", "Riffle", "", "shuffle"])
def test_unknown_permute_values_are_refused(permute):
    with pytest.raises(ValueError, match="permute must be True, False or 'riffle'"):
        ACDC(8, 8, depth=2, permute=permute)


# ------------------------------------------------------------------------------------------ pytorch-acdc


def _riffle(x):
    """pytorch-acdc's ``Riffle`` on ``(rows, d)``, ``d`` even."""
    rows, d = x.shape
    return x.reshape(rows, d // 2, 2).permute(0, 2, 1).reshape(rows, d)


class _OriginalLinearACDC:
    """pytorch-acdc's ``LinearACDC(in_features, out_features, bias, original=True)``, in float64."""

    def __init__(self, in_features, out_features, bias, generator):
        self.expansion = out_features // in_features
        draw = dict(dtype=torch.float64, generator=generator)
        self.A = 1 + 0.3 * torch.randn(out_features, 1, **draw)  # theirs start at N(1, 0.01²): moved away here
        self.D = 1 + 0.3 * torch.randn(out_features, 1, **draw)
        self.bias = torch.rand(out_features, **draw) - 0.5 if bias else None
        eye = torch.eye(out_features, dtype=torch.float64)
        self.dct, self.idct = torch_dct.dct(eye), torch_dct.idct(eye)

    def __call__(self, x):
        if self.expansion > 1:
            x = x.repeat(1, self.expansion)
        weight = torch.matmul(self.A * self.dct, self.D * self.idct).t()
        return F.linear(x, weight, self.bias)


class _StackedLinearACDCOriginal:
    """pytorch-acdc's ``StackedLinearACDC(in_features, out_features, n_layers, bias, original=True)``."""

    def __init__(self, in_features, out_features, n_layers, bias, generator):
        sizes = [in_features] + [out_features] * (n_layers - 1)
        self.layers = [_OriginalLinearACDC(d, out_features, bias and i == n_layers - 1, generator)
                       for i, d in enumerate(sizes)]

    def __call__(self, x):
        for layer in self.layers:
            x = _riffle(layer(x))
        return x


@pytest.mark.parametrize("in_features, out_features, n_layers", [(16, 16, 4), (8, 32, 3), (64, 64, 1), (6, 12, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_reproduces_pytorch_acdc_stacked_linear_acdc_original(in_features, out_features, n_layers, bias, backend):
    stack = _StackedLinearACDCOriginal(in_features, out_features, n_layers, bias, torch.Generator().manual_seed(0))
    layer = ACDC(out_features, out_features, depth=n_layers, permute="riffle", bias=bias, dtype=torch.float64)
    with torch.no_grad():  # their layer i's A and D are row i of ours; their last bias is ours
        layer.A.copy_(torch.cat([l.A.T for l in stack.layers]))
        layer.D.copy_(torch.cat([l.D.T for l in stack.layers]))
        if bias:
            layer.bias.copy_(stack.layers[-1].bias)
    riffle = riffle_permutation(out_features)
    x = torch.randn(10, in_features, dtype=torch.float64)
    # their input tiling and their riffle after the last layer are outside structlin's cascade
    ours = layer(x.repeat(1, out_features // in_features))[:, riffle]
    torch.testing.assert_close(ours, stack(x), rtol=0, atol=1e-10)


def test_quadratic_parts_with_diagonal_biases_report_their_constant():
    layer = structlin.StructuredLayer.create("quadratic", 8, 6, form="xu", branch="acdc", depth=2, diagonal_bias=True,
                                             dtype=torch.float64)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_()
    x = torch.randn(5, 8, dtype=torch.float64)
    parts = {}
    for key, branch in layer.branches.items():
        parts.update(branch(x))
    for name, output in parts.items():
        weight, bias = layer.part_dense(name)
        torch.testing.assert_close(output, x @ weight.T + (0 if bias is None else bias), rtol=0, atol=1e-10)


def test_diagonal_biases_train_at_the_base_rate():
    layer = ACDC(64, 64, depth=2, diagonal_bias=True)
    rates = {id(p): group["lr"] for group in structlin.param_groups(layer, lr=1e-3) for p in group["params"]}
    assert rates[id(layer.A_bias)] == rates[id(layer.D_bias)] == rates[id(layer.bias)] == 1e-3
    assert rates[id(layer.A)] == pytest.approx(1e-3 * 8)  # the diagonals: √64 times the base rate


def test_layers_pickled_before_these_options_load_with_the_old_function():
    plain = ACDC(8, 8, depth=3, dtype=torch.float64)
    state = plain.__getstate__()  # made into the state of a layer pickled before the options existed
    state["_parameters"] = {k: v for k, v in state["_parameters"].items() if not k.endswith("_bias") or k == "bias"}
    for name in ("permute", "_permutation_draws"):
        state.pop(name)
    old = ACDC.__new__(ACDC)
    old.__setstate__(state)
    assert old.permute is True and old.A_bias is None and not old.diagonal_bias
    x = torch.randn(3, 8, dtype=torch.float64)
    assert torch.equal(old(x), plain(x))
    assert "diagonal_bias" not in repr(old)
