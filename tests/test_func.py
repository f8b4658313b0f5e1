"""``torch.func`` transforms and forward-mode AD through every transform of ``structlin.transforms``.

Each op is checked against an independent reference built from explicit dense matrices (scipy's DCT and
Hadamard matrices, 0/1 gather matrices) and plain PyTorch ops, in float64, and against the reverse-mode
Jacobian that ``torch.autograd.functional.jacobian`` takes through the op's own backward. The layer-level checks
are in ``test_conformance_func.py``.
"""

import math
from typing import Callable, NamedTuple

import numpy as np
import pytest
import scipy.fft
import scipy.linalg
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from structlin.transforms import dct, dct1, dctn, fwht, idct, idct1, idctn
from structlin.transforms.acdc import acdc_cascade, gather_last, makhoul_order
from structlin.transforms.fastfood import fastfood

TOL = dict(rtol=1e-10, atol=1e-10)
DTYPE = torch.float64


class Case(NamedTuple):
    """``fn(*inputs)`` and an independent ``reference(*inputs)``; ``batchable``: the argnums a vmap over
    parameters maps (the first input is always the data), and ``stacks`` their stacked values if given (else
    perturbed copies of ``inputs``)."""

    fn: Callable
    reference: Callable
    inputs: tuple
    batchable: tuple = ()
    stacks: tuple | None = None


def _randn(*shape, seed=0):
    return torch.randn(*shape, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))


def _dense(matrix: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(matrix, dtype=DTYPE)


def _gather_pair(n_src: int, n_dst: int, seed: int):
    """``(index (n_dst,), inverse (n_src,))`` of a random injective gather, −1 where nothing is read (padding)."""
    rng = np.random.default_rng(seed)
    index = np.full(n_dst, -1)
    sources = rng.permutation(n_src)[: min(n_src, n_dst)]
    index[rng.permutation(n_dst)[: len(sources)]] = sources
    inverse = np.full(n_src, -1)
    inverse[index[index >= 0]] = np.flatnonzero(index >= 0)
    return torch.as_tensor(index), torch.as_tensor(inverse)


def _gather_matrix(index: torch.Tensor, n_src: int) -> torch.Tensor:
    """``M`` ``(len(index), n_src)`` with ``x @ M.T == gather_last(x, index, ·)``."""
    m = torch.zeros(len(index), n_src, dtype=DTYPE)
    rows = torch.nonzero(index >= 0).flatten()
    m[rows, index[rows]] = 1
    return m


def _dct_matrix(n: int, norm, inverse: bool = False) -> torch.Tensor:
    transform = scipy.fft.idct if inverse else scipy.fft.dct
    return _dense(transform(np.eye(n), norm=norm, axis=0))  # column j: the transform of e_j


def _linear_case(fn, matrix: torch.Tensor, rows: int = 3, seed: int = 0) -> Case:
    return Case(fn, lambda x: x @ matrix.T, (_randn(rows, matrix.shape[1], seed=seed),))


def _dct_case(norm, inverse: bool, n: int = 7) -> Case:
    op = idct if inverse else dct
    return _linear_case(lambda x: op(x, norm=norm), _dct_matrix(n, norm, inverse))


def _dctn_case(norm, inverse: bool, inner: tuple = (3, 4), dim=(-2, -1)) -> Case:
    """``dctn``/``idctn`` of ``(rows, *inner)`` inputs over ``dim``: the Kronecker product of 1-D matrices (the
    identity on dimensions not transformed)."""
    op = idctn if inverse else dctn
    dims = [d % (len(inner) + 1) - 1 for d in dim]  # positions in ``inner``
    factors = [_dct_matrix(n, norm, inverse) if i in dims else torch.eye(n, dtype=DTYPE) for i, n in enumerate(inner)]
    matrix = factors[0]
    for f in factors[1:]:
        matrix = torch.kron(matrix, f)
    x = _randn(3, *inner)
    return Case(lambda x: op(x, dim, norm), lambda x: (x.reshape(x.shape[0], -1) @ matrix.T).reshape(x.shape), (x,))


def _dct1_case(norm, inverse: bool, n: int = 6) -> Case:
    transform = scipy.fft.idct if inverse else scipy.fft.dct
    op = idct1 if inverse else dct1
    return _linear_case(lambda x: op(x, norm), _dense(transform(np.eye(n), type=1, norm=norm, axis=0)))


def _fwht_padded_case(n: int = 5) -> Case:
    h = _dense(scipy.linalg.hadamard(8)) / math.sqrt(8)
    return Case(lambda x: fwht(x, pad=True), lambda x: F.pad(x, (0, 8 - n)) @ h, (_randn(3, n),))


def _fwht_case(normalized: bool, n: int = 8) -> Case:
    h = _dense(scipy.linalg.hadamard(n)) / (math.sqrt(n) if normalized else 1.0)
    return _linear_case(lambda x: fwht(x, normalized), h)


def _gather_case(n_src: int = 5, n_dst: int = 8) -> Case:
    index, inverse = _gather_pair(n_src, n_dst, seed=3)
    other_index, other_inverse = _gather_pair(n_src, n_dst, seed=4)
    indices, inverses = torch.stack([index, other_index]), torch.stack([inverse, other_inverse])

    def reference(x, index, inverse):
        return x @ _gather_matrix(index, x.shape[-1]).T

    # vmap over the index pair: a batch of gathers (the layers' index buffers, stacked)
    return Case(gather_last, reference, (_randn(3, n_src), index, inverse), batchable=(1, 2), stacks=(indices, inverses))


def _acdc_block_matrix(n: int) -> Callable:
    """``(A_i, D_i) ↦`` the block ``P C⁻¹ diag(D_i) C diag(A_i) P⁻¹`` in Makhoul's order, differentiable."""
    c = _dct_matrix(n, "ortho")
    p = torch.eye(n, dtype=DTYPE)[torch.as_tensor(makhoul_order(n))]
    return lambda a, d: p @ c.T @ torch.diag(d) @ c @ torch.diag(a) @ p.T


def _acdc_case(k: int = 3, n: int = 8, n_in: int | None = None, n_out: int | None = None, permute=False, relu=False):
    gather_in = _gather_pair(n_in, n, seed=5) if n_in is not None else None
    gather_out = _gather_pair(n, n_out, seed=6) if n_out is not None else None
    permutations = None
    if permute:
        pairs = [_gather_pair(n, n, seed=10 + i) for i in range(k - 1)]
        permutations = tuple(torch.stack(t) for t in zip(*pairs))
    block = _acdc_block_matrix(n)

    def fn(x, A, D):
        return acdc_cascade(x, A, D, gather_in=gather_in, permutations=permutations, gather_out=gather_out, relu=relu)

    def reference(x, A, D):
        v = x if gather_in is None else x @ _gather_matrix(gather_in[0], x.shape[-1]).T
        for i in range(k):
            if i > 0 and permutations is not None:
                v = v @ _gather_matrix(permutations[0][i - 1], n).T
            if i > 0 and relu:
                v = torch.relu(v)
            v = v @ block(A[i], D[i]).T
        return v if gather_out is None else v @ _gather_matrix(gather_out[0], n).T

    x = _randn(4, n if n_in is None else n_in, seed=1)
    A, D = 1 + 0.5 * _randn(k, n, seed=2), 1 + 0.5 * _randn(k, n, seed=3)
    return Case(fn, reference, (x, A, D), batchable=(1, 2))


def _fastfood_case(n_in: int = 5, d: int = 8, blocks: int = 2, out_features: int = 13) -> Case:
    generator = torch.Generator().manual_seed(7)
    perm = torch.stack([torch.randperm(d, generator=generator) for _ in range(blocks)])
    inverse = torch.argsort(perm, dim=1)
    h = _dense(scipy.linalg.hadamard(d)) / math.sqrt(d)

    def fn(x, B, G, S, bias):
        return fastfood(x, B, G, S, bias, perm, inverse, out_features)

    def reference(x, B, G, S, bias):
        padded = F.pad(x, (0, d - x.shape[-1]))
        outputs = [S[j] * ((((padded * B[j]) @ h)[..., perm[j]] * G[j]) @ h) for j in range(blocks)]
        return torch.cat(outputs, dim=-1)[..., :out_features] + bias

    inputs = (_randn(3, n_in, seed=1), *(_randn(blocks, d, seed=s) for s in (2, 3, 4)), _randn(out_features, seed=5))
    return Case(fn, reference, inputs, batchable=(1, 2, 3, 4))


CASES = {
    **{f"dct-{norm}": _dct_case(norm, False) for norm in ("ortho", "backward", "forward")},
    **{f"idct-{norm}": _dct_case(norm, True) for norm in ("ortho", "backward", "forward")},
    "dct-even": _dct_case("ortho", False, n=8),
    **{f"dctn-{norm}": _dctn_case(norm, False) for norm in ("ortho", "backward", "forward")},
    **{f"idctn-{norm}": _dctn_case(norm, True) for norm in ("ortho", "backward", "forward")},
    "dctn-middle-dim": _dctn_case("ortho", False, inner=(4, 3), dim=(-2,)),
    "idctn-three-dims": _dctn_case("backward", True, inner=(2, 3, 2), dim=(-3, -2, -1)),
    **{f"dct1-{norm}": _dct1_case(norm, False) for norm in ("ortho", "backward", "forward")},
    **{f"idct1-{norm}": _dct1_case(norm, True) for norm in ("ortho", "backward", "forward")},
    "fwht-padded": _fwht_padded_case(),
    "fwht-normalized": _fwht_case(True),
    "fwht-unnormalized": _fwht_case(False),
    "gather_last": _gather_case(),
    "acdc": _acdc_case(),
    "acdc-gathers-padding": _acdc_case(n_in=5, n_out=6),
    "acdc-wide-out": _acdc_case(k=2, n=7, n_in=7, n_out=9),
    "acdc-permutations-relu": _acdc_case(n_in=6, n_out=5, permute=True, relu=True),
    "acdc-one-block": _acdc_case(k=1, n=6, n_out=4),
    "fastfood": _fastfood_case(),
    "fastfood-one-block": _fastfood_case(n_in=8, d=8, blocks=1, out_features=8),
}
case_ids = pytest.mark.parametrize("name", list(CASES))


def _float_argnums(case: Case) -> tuple:
    return tuple(i for i, t in enumerate(case.inputs) if t.is_floating_point())


def _of_floats(case: Case):
    """``(f, floats)``: ``fn`` as a function of the floating inputs only (the index tensors fixed), and their values."""
    argnums = _float_argnums(case)

    def f(*floats):
        inputs = list(case.inputs)
        for i, t in zip(argnums, floats):
            inputs[i] = t
        return case.fn(*inputs)

    return f, tuple(case.inputs[i] for i in argnums)


def _reverse_jacobians(case: Case) -> tuple:
    """The Jacobian of ``fn`` in each floating input, by reverse mode through the op's own backward."""
    return torch.autograd.functional.jacobian(*_of_floats(case))


def _contract(jacobian: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """``J · t`` for ``J`` of shape ``out_shape + in_shape``."""
    return (jacobian.reshape(-1, tangent.numel()) @ tangent.reshape(-1)).reshape(jacobian.shape[: jacobian.dim() - tangent.dim()])


def _tangents(case: Case, seed: int = 20) -> tuple:
    return tuple(_randn(*case.inputs[i].shape, seed=seed + i) for i in _float_argnums(case))


def _cotangent(case: Case) -> torch.Tensor:
    return _randn(*case.reference(*case.inputs).shape, seed=30)


def _scalar_loss(fn: Callable, c: torch.Tensor) -> Callable:
    """``⟨c, fn(...)⟩ + ½ ‖fn(...)‖²``: first and second derivatives that see every entry of ``fn``'s Jacobian."""

    def loss(*inputs):
        y = fn(*inputs)
        return (c * y).sum() + 0.5 * y.square().sum()

    return loss


@case_ids
def test_forward_and_reverse_jacobians_match_the_dense_reference(name, backend):
    case = CASES[name]
    argnums = _float_argnums(case)
    torch.testing.assert_close(case.fn(*case.inputs), case.reference(*case.inputs), **TOL)
    expected = torch.func.jacrev(case.reference, argnums=argnums)(*case.inputs)
    for transform in (torch.func.jacfwd, torch.func.jacrev):
        torch.testing.assert_close(transform(case.fn, argnums=argnums)(*case.inputs), expected, **TOL)
    torch.testing.assert_close(_reverse_jacobians(case), expected, **TOL)


@case_ids
def test_jvp_is_the_reverse_mode_jacobian_times_the_tangent(name):
    case = CASES[name]
    tangents = _tangents(case)
    expected = sum(_contract(j, t) for j, t in zip(_reverse_jacobians(case), tangents))
    y, tangent = torch.func.jvp(*_of_floats(case), tangents)
    torch.testing.assert_close(y, case.fn(*case.inputs), **TOL)
    torch.testing.assert_close(tangent, expected, **TOL)
    f, floats = _of_floats(case)
    _, linearized = torch.func.linearize(f, *floats)  # the jvp traced once, then replayed
    torch.testing.assert_close(linearized(*tangents), expected, **TOL)


@case_ids
def test_forward_ad_dual_tensors_carry_the_tangent(name):
    case = CASES[name]
    argnums, tangents = _float_argnums(case), _tangents(case)
    expected = sum(_contract(j, t) for j, t in zip(_reverse_jacobians(case), tangents))
    with fwAD.dual_level():
        inputs = list(case.inputs)
        for i, t in zip(argnums, tangents):
            inputs[i] = fwAD.make_dual(inputs[i], t)
        primal, tangent = fwAD.unpack_dual(case.fn(*inputs))
    torch.testing.assert_close(primal, case.fn(*case.inputs), **TOL)
    assert tangent is not None, "the tangent was dropped"
    torch.testing.assert_close(tangent, expected, **TOL)


@pytest.mark.parametrize("which", [0, -1], ids=["first-input", "last-input"])
@case_ids
def test_forward_ad_with_one_dual_input(name, which):
    """Only one input (the data, or the last parameter) carries a tangent; the others are plain tensors."""
    case = CASES[name]
    argnums = _float_argnums(case)
    position = argnums[which]
    tangent_in = _randn(*case.inputs[position].shape, seed=40)
    expected = _contract(_reverse_jacobians(case)[argnums.index(position)], tangent_in)
    with fwAD.dual_level():
        inputs = list(case.inputs)
        inputs[position] = fwAD.make_dual(inputs[position], tangent_in)
        tangent = fwAD.unpack_dual(case.fn(*inputs)).tangent
    assert tangent is not None, "the tangent was dropped"
    torch.testing.assert_close(tangent, expected, **TOL)


@case_ids
def test_grad_of_a_scalar_function(name):
    case = CASES[name]
    argnums, c = _float_argnums(case), _cotangent(case)
    got = torch.func.grad(_scalar_loss(case.fn, c), argnums=argnums)(*case.inputs)
    expected = torch.func.grad(_scalar_loss(case.reference, c), argnums=argnums)(*case.inputs)
    torch.testing.assert_close(got, expected, **TOL)


@case_ids
def test_hessian_of_a_scalar_function(name):
    case = CASES[name]
    argnums, c = _float_argnums(case), _cotangent(case)
    got = torch.func.hessian(_scalar_loss(case.fn, c), argnums=argnums)(*case.inputs)
    expected = torch.func.hessian(_scalar_loss(case.reference, c), argnums=argnums)(*case.inputs)
    torch.testing.assert_close(got, expected, **TOL)


def _stacked(t: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` different copies of ``t`` along a new first dim."""
    return torch.stack([t + 0.1 * _randn(*t.shape, seed=seed + i) for i in range(count)])


@case_ids
def test_vmap_over_the_data_in_any_dim(name):
    case = CASES[name]
    x, rest = case.inputs[0], case.inputs[1:]
    xs = torch.stack([x + i for i in range(3)])  # (3, rows, n)
    expected = torch.stack([case.fn(x_i, *rest) for x_i in xs])
    got = torch.func.vmap(case.fn, in_dims=(0, *(None,) * len(rest)))(xs, *rest)
    torch.testing.assert_close(got, expected, **TOL)
    moved = torch.func.vmap(case.fn, in_dims=(1, *(None,) * len(rest)), out_dims=1)(xs.movedim(0, 1), *rest)
    torch.testing.assert_close(moved, expected.movedim(0, 1), **TOL)
    if not name.startswith("fastfood"):  # fastfood's contract is (rows, n_in) inputs; the others take (..., n)
        rows = torch.func.vmap(case.fn, in_dims=(0, *(None,) * len(rest)))(x, *rest)  # each row alone: (n,)
        torch.testing.assert_close(rows, case.fn(*case.inputs), **TOL)


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.batchable])
def test_vmap_over_stacked_parameters(name):
    case = CASES[name]
    stacks = case.stacks or [_stacked(case.inputs[i], 3, seed=50 + 10 * i) for i in case.batchable]
    count = len(stacks[0])
    stacked = list(case.inputs)
    for i, stack in zip(case.batchable, stacks):
        stacked[i] = stack
    in_dims = tuple(0 if i in case.batchable else None for i in range(len(stacked)))
    got = torch.func.vmap(case.fn, in_dims=in_dims)(*stacked)
    for j in range(count):
        inputs = [t[j] if i in case.batchable else t for i, t in enumerate(stacked)]
        torch.testing.assert_close(got[j], case.reference(*inputs), **TOL)


@case_ids
def test_per_sample_gradients_with_vmap_of_grad(name):
    case = CASES[name]
    x, rest = case.inputs[0], case.inputs[1:]
    c = _cotangent(case)

    def per_row(fn):  # (row, c_row, *rest): the loss of one row, as a batch of one
        return lambda row, c_row, *rest: _scalar_loss(fn, c_row)(row.unsqueeze(0), *rest)

    argnums = tuple(0 if a == 0 else a + 1 for a in _float_argnums(case))  # c_row sits at 1
    per_sample = torch.func.vmap(torch.func.grad(per_row(case.fn), argnums=argnums), in_dims=(0, 0, *(None,) * len(rest)))
    got = per_sample(x, c, *rest)
    for r in range(x.shape[0]):
        inputs = [x[r], c[r], *rest]
        leaves = [inputs[a].clone().requires_grad_() for a in argnums]
        for a, leaf in zip(argnums, leaves):
            inputs[a] = leaf
        expected = torch.autograd.grad(per_row(case.reference)(*inputs), leaves)
        torch.testing.assert_close(tuple(g[r] for g in got), expected, **TOL)


@case_ids
def test_backward_of_a_recorded_graph_under_vmap_and_forward_ad(name):
    """The op's backward run under a transform: batched ``grad_outputs`` (vmap over the backward) and a dual
    ``grad_outputs`` (forward-over-reverse on a graph recorded without forward AD)."""
    case = CASES[name]
    argnums = _float_argnums(case)
    inputs = [t.clone().requires_grad_() if t.is_floating_point() else t for t in case.inputs]
    y = case.fn(*inputs)
    targets = [inputs[i] for i in argnums]
    cotangents = torch.stack([_randn(*y.shape, seed=60 + j) for j in range(3)])
    batched = torch.autograd.grad(y, targets, cotangents, retain_graph=True, is_grads_batched=True)
    for j in range(3):
        one = torch.autograd.grad(y, targets, cotangents[j], retain_graph=True)
        torch.testing.assert_close(tuple(b[j] for b in batched), one, **TOL)
    with fwAD.dual_level():
        dual = fwAD.make_dual(cotangents[0], cotangents[1])
        grads = torch.autograd.grad(y, targets, dual, retain_graph=True)
        tangents = [fwAD.unpack_dual(g).tangent for g in grads]
    expected = torch.autograd.grad(y, targets, cotangents[1])  # a vjp is linear in the cotangent
    assert all(t is not None for t in tangents), "the tangent was dropped"
    torch.testing.assert_close(tuple(tangents), expected, **TOL)


@case_ids
def test_vectorized_jacobians_of_torch_autograd_functional(name):
    """``torch.autograd.functional.jacobian(vectorize=True)`` runs the backward (reverse) or the forward (forward
    mode) under its own vmap."""
    case = CASES[name]
    expected = _reverse_jacobians(case)
    for strategy in ("reverse-mode", "forward-mode"):
        got = torch.autograd.functional.jacobian(*_of_floats(case), vectorize=True, strategy=strategy)
        torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dct-ortho", "dctn-backward", "dct1-ortho", "fwht-normalized", "acdc-permutations-relu",
                                  "fastfood"])
def test_compiled_transforms_match_eager(name):
    """``torch.compile(fullgraph=True)`` of a ``torch.func`` transform traces the composite forms."""
    case = CASES[name]
    x, rest = case.inputs[0], case.inputs[1:]

    def loss(x):
        return case.fn(x, *rest).square().sum()

    xs = torch.stack([x, 2 * x])
    for transform, argument in ((torch.func.grad(loss), x), (torch.func.vmap(lambda x: case.fn(x, *rest)), xs)):
        compiled = torch.compile(transform, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(argument), transform(argument), **TOL)


@pytest.mark.parametrize("name", ["dct-ortho", "dctn-ortho", "idct1-backward", "fwht-normalized", "gather_last",
                                  "acdc-gathers-padding", "fastfood"])
def test_empty_batches_under_transforms(name):
    case = CASES[name]
    x, rest = case.inputs[0], case.inputs[1:]
    empty = x[:0]
    expected_shape = case.fn(empty, *rest).shape
    _, tangent = torch.func.jvp(lambda x: case.fn(x, *rest), (empty,), (empty,))
    assert tangent.shape == expected_shape
    assert torch.func.vmap(case.fn, in_dims=(0, *(None,) * len(rest)))(empty.unsqueeze(0), *rest).shape == (1, *expected_shape)
    assert torch.func.jacrev(lambda x: case.fn(x, *rest))(empty).shape == (*expected_shape, *empty.shape)
    with fwAD.dual_level():
        primal = fwAD.unpack_dual(case.fn(fwAD.make_dual(empty, empty), *rest)).primal
    assert primal.shape == expected_shape


@pytest.mark.parametrize("transform", ["jvp", "forward_ad"])
def test_custom_op_called_directly_refuses_instead_of_dropping_the_tangent(transform):
    x = _randn(2, 8)
    with pytest.raises(RuntimeError, match=r"structlin::dct was called directly under a torch.func transform"):
        if transform == "jvp":
            torch.func.jvp(lambda x: torch.ops.structlin.dct(x, "ortho"), (x,), (x,))
        else:
            with fwAD.dual_level():
                torch.ops.structlin.dct(fwAD.make_dual(x, x), "ortho")


@pytest.mark.parametrize("name, op", [("acdc", "acdc_cascade_backward"), ("fastfood", "fastfood_backward")])
def test_plain_double_backward_through_the_fused_ops_raises_naming_the_op(name, op):
    """Not supported (use torch.func for higher derivatives): it must raise, never return a wrong derivative."""
    case = CASES[name]
    x = case.inputs[0].clone().requires_grad_()
    (grad,) = torch.autograd.grad(case.fn(x, *case.inputs[1:]).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=f"structlin.{op}"):
        torch.autograd.grad(grad.sum(), x)


def test_the_normal_path_still_runs_the_custom_ops():
    """Outside transforms the public functions go through the custom ops (which ``FlopCounterMode`` counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    case = CASES["acdc-permutations-relu"]
    with FlopCounterMode(display=False) as counter:
        case.fn(*case.inputs)
        dct(case.inputs[0][:, :4])
    counted = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert {"structlin.acdc_cascade", "structlin.dct"} <= counted


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_fastfood_accepts_diagonals_of_any_strides(layout, backend):
    """``B``, ``G``, ``S``, ``bias``, ``x`` and the permutations as strided views give the results of contiguous
    copies, forward and backward (the native kernels read dense memory)."""
    n_in, d, blocks, out_features = 5, 8, 3, 20
    generator = torch.Generator().manual_seed(0)
    perm = torch.stack([torch.randperm(d, generator=generator) for _ in range(blocks)])
    inverse = torch.argsort(perm, dim=1)
    if layout == "transposed":  # e.g. B = torch.randn(d, blocks).T, or load_state_dict(..., assign=True)
        bases = [_randn(d, blocks, seed=s) for s in (1, 2, 3)] + [_randn(n_in, 4, seed=4), _randn(out_features, 2, seed=5)]
        views = [lambda t: t.T] * 4 + [lambda t: t[:, 0]]
        indices = (perm.T.contiguous().T, inverse.T.contiguous().T)
    else:
        bases = [_randn(blocks, 2 * d, seed=s) for s in (1, 2, 3)] + [_randn(4, 2 * n_in, seed=4), _randn(2 * out_features, seed=5)]
        views = [lambda t: t[:, ::2]] * 3 + [lambda t: t[:, 1::2], lambda t: t[::2]]
        indices = (perm.repeat_interleave(2, dim=1)[:, ::2], inverse.repeat_interleave(2, dim=1)[:, ::2])
    bases = [b.requires_grad_() for b in bases]
    B, G, S, x, bias = strided = [view(b) for view, b in zip(views, bases)]
    assert not any(t.is_contiguous() for t in (*strided, *indices))
    assert torch.equal(indices[0], perm) and torch.equal(indices[1], inverse)
    dense = [t.detach().contiguous().requires_grad_() for t in strided]
    results = []
    for (B_, G_, S_, x_, bias_), (p, q) in ((strided, indices), (dense, (perm, inverse))):
        y = fastfood(x_, B_, G_, S_, bias_, p, q, out_features)
        grads = torch.autograd.grad(y, (x_, B_, G_, S_, bias_), _randn(*y.shape, seed=6))
        results.append((y, grads))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-12)


def test_fastfood_layer_with_strided_state_from_assign_loading(backend):
    """``load_state_dict(..., assign=True)`` keeps the loaded tensors' strides: the layer must still run."""
    import structlin

    layer = structlin.Fastfood(5, 20, dtype=DTYPE)
    x = _randn(4, 5, seed=1)
    expected = layer(x)
    strided = {name: t.T.contiguous().T if t.dim() == 2 and t.is_floating_point() else t
               for name, t in layer.state_dict().items()}
    assert any(not t.is_contiguous() for t in strided.values())
    layer.load_state_dict(strided, assign=True)
    assert not layer.S.is_contiguous()
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    x.requires_grad_()
    layer(x).sum().backward()
    assert x.grad is not None and layer.S.grad.shape == layer.S.shape
