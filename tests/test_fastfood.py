import io
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

import structlin
from structlin import Fastfood, RandomFeatures, StructuredLayer, random_features
from structlin.costs import fastfood_backward_flops, fastfood_flops
from structlin.strategies import FASTFOOD_INITS, FastfoodInit
from structlin.strategies.fastfood_init import Paper
from structlin.transforms.fastfood import fastfood

from helpers import assert_compiled_matches_eager


def _dense_reference(layer: Fastfood) -> np.ndarray:
    """``(out, in)``: the five matrices of every block multiplied out in float64, stacked and cut to size."""
    d = layer.size
    H = scipy.linalg.hadamard(d) / math.sqrt(d)
    blocks = []
    for j in range(layer.blocks):
        P = np.zeros((d, d))
        P[np.arange(d), layer.permutations[j].numpy()] = 1.0
        S, G, B = (np.diag(getattr(layer, name)[j].detach().double().numpy()) for name in ("S", "G", "B"))
        blocks.append(S @ H @ G @ P @ H @ B)
    return np.concatenate(blocks)[: layer.out_features, : layer.in_features]


def _random_layer(*args, **kwargs) -> Fastfood:
    layer = Fastfood(*args, dtype=torch.float64, **kwargs)
    with torch.no_grad():  # generic values, so that no sign or index error can hide
        for name in ("S", "G", "B"):
            getattr(layer, name).normal_()
        if layer.bias is not None:
            layer.bias.normal_()
    return layer


SHAPES = [(1, 1), (2, 2), (5, 9), (8, 8), (9, 5), (16, 40), (100, 300), (300, 100), (64, 64)]


@pytest.mark.parametrize("in_features, out_features", SHAPES)
def test_forward_matches_hadamard_product_and_to_dense(in_features, out_features, backend):
    layer = _random_layer(in_features, out_features)
    x = torch.randn(6, in_features, dtype=torch.float64)
    reference = x.numpy() @ _dense_reference(layer).T + layer.bias.detach().numpy()
    y = layer(x)
    np.testing.assert_allclose(y.detach().numpy(), reference, rtol=0, atol=1e-12)
    dense = layer.to_dense()
    assert dense.shape == (out_features, in_features)
    np.testing.assert_allclose(dense.numpy(), _dense_reference(layer), rtol=0, atol=1e-13)


def test_sizes_and_blocks():
    layer = Fastfood(100, 300)
    assert (layer.size, layer.blocks) == (128, 3)
    assert layer.S.shape == layer.G.shape == layer.B.shape == layer.permutations.shape == (3, 128)
    assert (Fastfood(128, 128).size, Fastfood(129, 1).size, Fastfood(1, 3).blocks) == (128, 256, 3)


@pytest.mark.parametrize("learn", [("S", "G", "B"), ("G",), ("S", "B"), ()])
@pytest.mark.parametrize("in_features, out_features", [(6, 6), (5, 11), (8, 3)])
def test_gradcheck_layer_for_each_learned_diagonal(learn, in_features, out_features, backend):
    layer = _random_layer(in_features, out_features, learn=learn)
    names = list(learn) + ["bias"]
    x = torch.randn(3, in_features, dtype=torch.float64, requires_grad=True)
    values = [getattr(layer, name).detach().clone().requires_grad_(True) for name in names]

    def f(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(f, (x, *values))


@pytest.mark.parametrize("with_bias", [True, False])
def test_gradcheck_op(with_bias, backend):
    torch.manual_seed(0)
    blocks, d, n_in, out = 2, 8, 6, 13
    B, G, S = (torch.randn(blocks, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(out, dtype=torch.float64, requires_grad=True) if with_bias else None
    perm = torch.stack([torch.randperm(d) for _ in range(blocks)])
    inverse = torch.argsort(perm, dim=1)
    x = torch.randn(4, n_in, dtype=torch.float64, requires_grad=True)
    inputs = (x, B, G, S) + ((bias,) if with_bias else ())

    def f(x, B, G, S, *rest):
        return fastfood(x, B, G, S, rest[0] if rest else None, perm, inverse, out)

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("rows, in_features, out_features", [(7, 100, 300), (42, 1000, 2048)])
def test_backends_agree_on_outputs_and_gradients(rows, in_features, out_features):
    """Also large enough for the native kernels' multithreaded paths (on a machine with several threads)."""
    from structlin.transforms import native_kernels

    layer = _random_layer(in_features, out_features)
    x = torch.randn(rows, in_features, dtype=torch.float64, requires_grad=True)
    results = []
    for native in (True, False):
        with native_kernels(native):
            layer.zero_grad()
            x.grad = None
            y = layer(x)
            y.square().sum().backward()
            results.append([y.detach()] + [t.grad.clone() for t in (x, layer.S, layer.G, layer.B, layer.bias)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("shape", [(), (0,), (2, 3), (1, 1, 4), (0, 5)])
def test_batch_shapes_and_empty_batches(shape, backend):
    layer = _random_layer(12, 20)
    x = torch.randn(*shape, 12, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert y.shape == (*shape, 20)
    if x.numel():
        reference = x.detach().reshape(-1, 12).numpy() @ _dense_reference(layer).T + layer.bias.detach().numpy()
        np.testing.assert_allclose(y.detach().reshape(-1, 20).numpy(), reference, rtol=0, atol=1e-12)
    y.sum().backward()
    assert x.grad.shape == x.shape
    if not x.numel():
        for p in (layer.S, layer.G, layer.B, layer.bias):
            assert torch.equal(p.grad, torch.zeros_like(p))


def test_non_contiguous_and_expanded_inputs(backend):
    layer = _random_layer(8, 8)
    base = torch.randn(8, 16, dtype=torch.float64)
    for x in (base.T, base[:, ::2], base[:1, :8].expand(3, 8)):
        torch.testing.assert_close(layer(x), layer(x.contiguous()), rtol=0, atol=0)


@pytest.mark.parametrize("learn", [("S", "G", "B"), ("G",), ()])
def test_state_dict_round_trip_reproduces_outputs_exactly(learn):
    torch.manual_seed(0)
    layer = Fastfood(100, 300, learn=learn)
    torch.manual_seed(1)
    other = Fastfood(100, 300, learn=learn)
    x = torch.randn(3, 100)
    assert not torch.equal(layer(x), other(x))
    state = layer.state_dict()
    assert {"S", "G", "B", "permutations", "bias"} <= set(state)
    assert "_inverse" not in state
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(layer(x), other(x))


def test_fixed_diagonals_are_buffers_and_learned_ones_parameters():
    layer = Fastfood(16, 16, learn=("G",), bias=False)
    assert [name for name, _ in layer.named_parameters()] == ["G"]
    assert {"S", "B", "permutations"} <= {name for name, _ in layer.named_buffers()}
    fixed = Fastfood(16, 16, learn=(), bias=False)
    assert list(fixed.parameters()) == [] and fixed.cost(4).params == 0
    x = torch.randn(2, 16, requires_grad=True)
    fixed(x).sum().backward()  # the input gradient alone
    assert x.grad is not None


def test_reset_parameters_redraws_and_seed_reproduces():
    torch.manual_seed(3)
    a = Fastfood(16, 40)
    torch.manual_seed(3)
    b = Fastfood(16, 40)
    x = torch.randn(2, 16)
    assert torch.equal(a(x), b(x))
    before = a.G.detach().clone()
    a.reset_parameters()
    assert not torch.equal(a.G, before)


def _row_lengths(layer):
    return layer.to_dense().norm(dim=1)


def test_non_adaptive_rows_have_the_papers_lengths():
    torch.manual_seed(0)
    d = 256
    layer = Fastfood(d, 16 * d, learn=(), bias=False, dtype=torch.float64)
    dense = layer.to_dense()
    # every row of H G Π H B has length √d ‖G‖_F (orthonormal H: ‖G‖_F / √d), so row i has length |S_i| ‖G‖_F / √d
    lengths = dense.norm(dim=1).view(layer.blocks, d)
    expected = layer.S.abs() * layer.G.norm(dim=1, keepdim=True) / math.sqrt(d)
    torch.testing.assert_close(lengths, expected, rtol=1e-12, atol=0)
    # S = s/‖G‖_F with s ~ χ_d: d‖row‖² ~ χ²_d, the squared length of a row of N(0, 1/d) entries
    squared = (d * lengths.square()).flatten().numpy()
    assert scipy.stats.kstest(squared, scipy.stats.chi2(d).cdf).pvalue > 1e-3
    # the exponent −½ of ‖G‖_F would make the rows ‖G‖_F^½ ≈ d^¼ times too long, which the same test rejects
    wrong = squared * layer.G.norm(dim=1, keepdim=True).expand(-1, d).flatten().numpy()
    assert scipy.stats.kstest(wrong, scipy.stats.chi2(d).cdf).pvalue < 1e-6
    # entries look like N(0, 1/d)
    assert abs(dense.mean().item()) < 3 / math.sqrt(dense.numel() * d)
    assert abs(dense.var().item() * d - 1) < 0.02


def test_paper_init_has_unit_gain_and_sigma_sets_the_row_length():
    torch.manual_seed(0)
    x = torch.randn(512, 100, dtype=torch.float64)
    layer = Fastfood(100, 2048, learn=(), bias=False, dtype=torch.float64)
    gain = layer(x).square().sum(1).mean().item() / x.square().sum(1).mean().item()
    assert abs(gain / layer.blocks - 1) < 0.05  # each d-row block preserves the mean square of x
    torch.manual_seed(0)
    sigma = 3.0
    kernel_map = Fastfood(100, 4096, learn=(), bias=False, init=Paper(sigma=sigma), dtype=torch.float64)
    mean_square = _row_lengths(kernel_map).square().mean().item()
    assert abs(mean_square * sigma**2 / 100 - 1) < 0.05  # rows of 100 N(0, 1/σ²) entries: E‖row‖² = 100/σ²


def test_orthogonal_init_is_exactly_orthogonal():
    layer = Fastfood(64, 64, init="orthogonal", bias=False, dtype=torch.float64)
    dense = layer.to_dense()
    torch.testing.assert_close(dense @ dense.T, torch.eye(64, dtype=torch.float64), rtol=0, atol=1e-12)


def test_registering_a_user_init():
    @FASTFOOD_INITS.register("ones-test")
    class Ones(FastfoodInit):
        def init_(self, B, G, S):
            for t in (B, G, S):
                t.fill_(1.0)

    layer = Fastfood(4, 4, init="ones-test", bias=False, dtype=torch.float64)
    H = scipy.linalg.hadamard(4) / 2
    P = np.eye(4)[layer.permutations[0].numpy()]
    np.testing.assert_allclose(layer.to_dense().numpy(), H @ P @ H, rtol=0, atol=1e-15)


def _kernel_errors(X, sigma, n_features, seeds):
    from sklearn.kernel_approximation import RBFSampler

    K = np.exp(-((X[:, None] - X[None]) ** 2).sum(-1) / (2 * sigma**2))
    ours, theirs = [], []
    for seed in seeds:
        z = random_features(torch.from_numpy(X), n_features, sigma=sigma, seed=seed).numpy()
        ours.append(np.abs(z @ z.T - K).mean())
        sampler = RBFSampler(gamma=1 / (2 * sigma**2), n_components=n_features, random_state=seed).fit(X)
        zs = sampler.transform(X)
        theirs.append(np.abs(zs @ zs.T - K).mean())
    return np.mean(ours), np.mean(theirs)


def test_random_features_approximate_the_gaussian_kernel_like_rbf_sampler():
    X = np.random.default_rng(0).normal(size=(150, 30))
    sigma = 4.0
    errors = {n: _kernel_errors(X, sigma, n, seeds=range(3)) for n in (128, 2048)}
    (ours_small, sklearn_small), (ours_large, sklearn_large) = errors[128], errors[2048]
    # Monte Carlo error ~ 1/√features: 16× the features, about a quarter of the error
    assert ours_large < 0.35 * ours_small
    # Fastfood's correlated frequencies cost little against independent Gaussian ones
    assert ours_small < 1.5 * sklearn_small and ours_large < 1.5 * sklearn_large


def test_random_features_module_and_function():
    x = torch.randn(5, 7)
    z = random_features(x, 64, sigma=2.0, seed=1)
    assert z.shape == (5, 64) and z.dtype == torch.float32
    torch.testing.assert_close(random_features(x, 64, sigma=2.0, seed=1), z, rtol=0, atol=0)
    assert not torch.equal(random_features(x, 64, sigma=2.0, seed=2), z)
    torch.testing.assert_close((z * z).sum(1), torch.ones(5), rtol=1e-5, atol=1e-5)  # k(x, x) = 1 exactly
    module = RandomFeatures(7, 64, sigma=2.0)
    assert list(module.parameters()) == [] and module(x).shape == (5, 64)
    assert "sigma=2.0" in repr(module)
    with pytest.raises(ValueError, match="even int"):
        RandomFeatures(7, 63)
    with pytest.raises(ValueError, match="unknown random-feature kernel 'laplace'; valid names: rbf"):
        RandomFeatures(7, 64, kernel="laplace")
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        RandomFeatures(7, 64, sigma=0.0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"learn": ("S", "A")}, ValueError, r"learn entries must be among \('S', 'G', 'B'\)"),
        ({"learn": ("G", "G")}, ValueError, "twice"),
        ({"learn": 3}, ValueError, "learn must be a sequence"),
        ({"init": "nope"}, ValueError, "valid names: .*orthogonal, paper"),
        ({"init": 3}, ValueError, "init must be a name"),
        ({"dtype": torch.int32}, TypeError, "float16, bfloat16, float32, float64; got dtype=torch.int32"),
    ],
)
def test_bad_options_name_what_is_expected(kwargs, error, message):
    with pytest.raises(error, match=message):
        Fastfood(8, 8, **kwargs)


def test_learn_accepts_a_single_name():
    assert Fastfood(8, 8, learn="G").learn == ("G",)


def test_bad_inputs_name_the_expected_value():
    layer = Fastfood(8, 4)
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        layer(torch.randn(2, 7))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="float32 inputs"):
        layer(torch.ones(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive int"):
        Fastfood(0, 4)
    state = layer.state_dict()
    state["permutations"] = torch.zeros_like(state["permutations"])
    with pytest.raises(ValueError, match="permutation of 0"):
        layer.load_state_dict(state)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_half_outputs(dtype, backend):
    layer = Fastfood(16, 24)
    x = torch.randn(3, 16)
    y = layer(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y, layer(x.to(dtype).float()).to(dtype), rtol=0, atol=0)


def test_registry_create_repr_and_params():
    assert "fastfood" in structlin.available_layers()
    layer = StructuredLayer.create("fastfood", 100, 300, learn=("G", "S"))
    assert isinstance(layer, Fastfood)
    text = repr(layer)
    assert "size=128" in text and "blocks=3" in text and "learn=('S', 'G')" in text and "init=Paper(sigma=None)" in text
    cost = layer.cost((8,))
    assert cost.params == sum(p.numel() for p in layer.parameters()) == 2 * 3 * 128 + 300
    with pytest.raises(TypeError, match="cannot be built from an nn.Linear"):
        Fastfood.from_linear(torch.nn.Linear(4, 4))


def _saved_activation_bytes(layer, x):
    """Bytes of the saved tensors with ``x``'s rows (the rest are parameter-sized pieces and indices)."""
    saved = 0

    def pack(t):
        nonlocal saved
        if t.dim() and t.shape[0] == x.shape[0]:
            saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return saved


@pytest.mark.parametrize("in_features, out_features", [(256, 256), (100, 300), (300, 100)])
def test_saved_bytes_match_cost_and_the_bar(in_features, out_features):
    layer = Fastfood(in_features, out_features)
    x = torch.randn(64, in_features, requires_grad=True)
    saved = _saved_activation_bytes(layer, x)
    assert saved == layer.cost((64,)).saved_bytes == 64 * in_features * 4
    assert saved <= layer.blocks * 3 * 64 * layer.size * 4


@pytest.mark.parametrize("learn, bias, input_grad", [(("S", "G", "B"), True, True), (("G",), False, False), ((), True, True)])
def test_flop_counter_sees_the_op_with_the_registered_counts(learn, bias, input_grad, backend):
    from torch.utils.flop_counter import FlopCounterMode

    layer = Fastfood(100, 300, learn=learn, bias=bias)
    x = torch.randn(8, 100, requires_grad=input_grad)
    with FlopCounterMode(display=False) as counter:
        layer(x).sum().backward()
    counts = {str(op): c for op, c in counter.get_flop_counts()["Global"].items()}
    shape = (8, 100, 128, 3, 300)
    assert counts["structlin.fastfood"] == fastfood_flops(*shape, bias=bias)
    needs = (input_grad, "B" in learn, "G" in learn, "S" in learn, bias)
    assert counts["structlin.fastfood_backward"] == fastfood_backward_flops(*shape, needs=needs)
    if input_grad:
        cost = layer.cost((8,))
        assert (cost.forward_flops, cost.backward_flops) == (counts["structlin.fastfood"], counts["structlin.fastfood_backward"])


def test_native_wrappers_reject_mismatched_tensors():
    from structlin import _native

    if not _native.available():
        pytest.skip(_native.native_status())
    src = torch.randn(4, 8)
    with pytest.raises(ValueError, match="ff_gather_scale"):
        _native.ff_gather_scale(src, None, torch.ones(2, 8), torch.empty(4, 3, 8), 8, 0, 8)
    with pytest.raises(ValueError, match="ff_gather_scale"):
        _native.ff_gather_scale(src, torch.full((1, 8), -1), torch.ones(1, 8), torch.empty(4, 1, 8), 8, 8, 8)
    with pytest.raises(ValueError, match="ff_scale_sum"):
        _native.ff_scale_sum(src, torch.ones(8), None, torch.empty(5, 8), 1, 8, 8, 8)
    with pytest.raises(ValueError, match="ff_colsum"):
        _native.ff_colsum(src.view(4, 1, 8), src.double(), None, torch.empty(1, 8), 8, 8, 8)


@pytest.mark.slow
def test_compiled_matches_eager():
    layer = _random_layer(24, 40)
    assert_compiled_matches_eager(layer, torch.randn(5, 24, dtype=torch.float64, requires_grad=True))


def test_on_device(device):
    layer = _random_layer(12, 20, learn=("G",))
    x = torch.randn(4, 12, dtype=torch.float64)
    moved = _random_layer(12, 20, learn=("G",)).to(device)
    moved.load_state_dict(layer.state_dict())
    torch.testing.assert_close(moved(x.to(device)).cpu(), layer(x), rtol=0, atol=1e-10)


# --- state: permutations, derived inverse, half precision, meta device ---------------------------------------------


def _torch_dense(layer: Fastfood, S, G, B) -> torch.Tensor:
    """``(out, in)`` from the diagonals with autograd (float64), the permutations read from the layer."""
    d = layer.size
    H = torch.from_numpy(scipy.linalg.hadamard(d) / math.sqrt(d))
    blocks = [(S[j, :, None] * H) @ (G[j, :, None] * H[layer.permutations[j]] * B[j]) for j in range(layer.blocks)]
    return torch.cat(blocks)[: layer.out_features, : layer.in_features]


@pytest.mark.parametrize("edit", ["copy_", "data", "load_state_dict"])
def test_edited_permutations_are_followed_forward_and_backward(edit, backend):
    layer = _random_layer(12, 20)
    x = torch.randn(5, 12, dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()  # derives the inverse permutations of the permutations drawn at construction
    new = torch.stack([torch.randperm(16) for _ in range(layer.blocks)])
    if edit == "copy_":
        with torch.no_grad():
            layer.permutations.copy_(new)
    elif edit == "data":
        layer.permutations.data = new
    else:
        layer.load_state_dict(dict(layer.state_dict(), permutations=new))
    layer.zero_grad()
    x.grad = None
    y = layer(x)
    y.square().sum().backward()
    diagonals = [getattr(layer, name).detach().clone().requires_grad_() for name in ("S", "G", "B")]
    x2 = x.detach().clone().requires_grad_()
    y2 = x2 @ _torch_dense(layer, *diagonals).T + layer.bias.detach()
    y2.square().sum().backward()
    torch.testing.assert_close(y, y2, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-10)
    for name, reference in zip(("S", "G", "B"), diagonals):
        torch.testing.assert_close(getattr(layer, name).grad, reference.grad, rtol=0, atol=1e-10)


def _with(p: torch.Tensor, row: int, column: int, value) -> torch.Tensor:
    p = p.clone()
    p[row, column] = p[row, 0] if value == "repeat" else value
    return p


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: _with(p, 0, 1, "repeat"), "row 0 has repeated entries"),
        (lambda p: _with(p, 1, 3, -3), "row 1 has entries outside 0 … 15"),
        (lambda p: _with(p, 0, 2, 16), "row 0 has entries outside 0 … 15"),
        (lambda p: p.float(), r"got torch.float32 of shape \(2, 16\)"),
        (lambda p: p[:1], r"got torch.int64 of shape \(1, 16\)"),
    ],
    ids=["repeated", "negative", "too large", "float", "one row"],
)
def test_a_non_permutation_is_refused_on_load_naming_the_key_and_at_the_next_call_after_an_edit(change, message):
    layer = _random_layer(12, 20)
    incoming = _random_layer(12, 20).state_dict()
    bad = change(incoming["permutations"])
    x = torch.randn(3, 12, dtype=torch.float64)
    state, y = {k: v.clone() for k, v in layer.state_dict().items()}, layer(x)
    with pytest.raises(ValueError, match=r"state_dict\['permutations'\] for Fastfood must be .*" + message):
        layer.load_state_dict(dict(incoming, permutations=bad))
    assert all(torch.equal(value, state[key]) for key, value in layer.state_dict().items())
    assert torch.equal(layer(x), y)
    layer.permutations.data = bad  # the same value put in place behind the layer's back
    for call in (lambda: layer(x), layer.to_dense):
        with pytest.raises(ValueError, match="Fastfood's buffer 'permutations' must be .*" + message):
            call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_layers_compute_in_float32_and_stay_finite(dtype):
    torch.manual_seed(0)
    d = 4096
    layer = Fastfood(d, d).to(dtype)
    x = (300 * torch.randn(16, d)).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    B, G, S = (getattr(layer, name).detach().double() for name in ("B", "G", "S"))
    reference = Fastfood(d, d, dtype=torch.float64)
    reference.load_state_dict({"B": B, "G": G, "S": S, "bias": layer.bias.double(), "permutations": layer.permutations})
    expected = reference(x.double())
    assert expected.abs().max() < torch.finfo(dtype).max  # the result fits the dtype ...
    assert torch.isfinite(y).all()  # ... so it is finite
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(y.double(), expected, rtol=eps, atol=eps * expected.abs().max().item())
    y.float().square().mean().backward()
    for p in layer.parameters():
        assert p.grad.dtype == dtype and torch.isfinite(p.grad).all()


def test_a_half_layer_can_be_built_directly():
    layer = Fastfood(16, 24, dtype=torch.float16)
    x = torch.randn(3, 16)
    y = layer(x.half())
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), layer.float()(x.half().float()), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("learn", [("S", "G", "B"), ()])
def test_meta_construction_then_to_empty_and_seeded_reset_equals_a_normal_build(learn):
    layer = Fastfood(8, 20, learn=learn, device="meta")
    assert all(t.is_meta for t in layer.state_dict().values())
    skipped = torch.nn.utils.skip_init(Fastfood, 8, 20, learn=learn)
    with pytest.raises(RuntimeError, match="uninitialised memory"):
        skipped(torch.randn(2, 8))
    for materialised in (layer.to_empty(device="cpu"), skipped):
        torch.manual_seed(2)
        materialised.reset_parameters()
        torch.manual_seed(2)
        normal = Fastfood(8, 20, learn=learn)
        for key, value in normal.state_dict().items():
            assert torch.equal(materialised.state_dict()[key], value), key


def test_random_features_build_on_the_meta_device():
    with torch.device("meta"):
        module = RandomFeatures(6, 32, sigma=2.0)
    module.to_empty(device="cpu")
    torch.manual_seed(1)
    module.reset_parameters()
    torch.manual_seed(1)
    normal = RandomFeatures(6, 32, sigma=2.0)
    x = torch.randn(4, 6)
    assert torch.equal(module(x), normal(x))


@pytest.mark.parametrize("name", sorted(FASTFOOD_INITS.names()))
def test_init_strategies_run_on_meta_tensors(name):
    with torch.device("meta"):
        B, G, S = torch.empty(2, 8), torch.empty(2, 8), torch.empty(2, 8)
        FASTFOOD_INITS.get(name)().init_(B, G, S)
    assert B.is_meta and G.is_meta and S.is_meta
