"""The Monarch layer against explicit float64 references: its matrix, the paper's square case, the padding rule,
the closed-form projection of ``from_linear`` (exact on Monarch matrices, Eckart–Young error otherwise), its cost
against the report, its init scale and swap's use of it. The contract every kind keeps is in the conformance
suites (``layer_cases.OPTIONS["monarch"]``)."""

import numpy as np
import pytest
import torch
from torch import nn

import structlin
from structlin import Monarch, StructuredLayer
from structlin.layers.monarch import default_nblocks, monarch_sizes

# (in, out, nblocks): square, the paper's n = m² with m blocks, rectangular both ways, padding on either side,
# more blocks than hidden units per block (q < k), one block (a product of two dense matrices)
SHAPES = [(16, 16, 4), (9, 9, 3), (8, 24, 2), (24, 8, 4), (10, 7, 3), (5, 12, 4), (12, 12, 1), (1, 1, 2)]


def _random(in_features, out_features, nblocks, bias=True, seed=0):
    torch.manual_seed(seed)
    layer = Monarch(in_features, out_features, nblocks, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer


def reference_matrix(layer) -> np.ndarray:
    """``L P R`` by the definition, one hidden unit at a time: unit ``h`` is row ``h % q`` of ``R``'s block
    ``h // q`` and column ``h // k`` of ``L``'s block ``h % k``; padded rows and columns cropped."""
    k, p, q, s = layer.sizes
    L, R = layer.L.detach().numpy(), layer.R.detach().numpy()
    dense = np.zeros((k * s, k * p))
    for h in range(k * q):
        j, c, i, r = h // q, h % q, h % k, h // k
        dense[i * s:(i + 1) * s, j * p:(j + 1) * p] += np.outer(L[i, :, r], R[j, c, :])
    return dense[: layer.out_features, : layer.in_features]


@pytest.mark.parametrize("in_features, out_features, nblocks", SHAPES)
def test_forward_and_to_dense_are_the_defined_matrix(in_features, out_features, nblocks):
    layer = _random(in_features, out_features, nblocks)
    expected = reference_matrix(layer)
    np.testing.assert_allclose(layer.to_dense().numpy(), expected, rtol=0, atol=1e-12)
    x = torch.randn(2, 3, in_features, dtype=torch.float64)
    y = x.numpy() @ expected.T + layer.bias.detach().numpy()
    np.testing.assert_allclose(layer(x).detach().numpy(), y, rtol=0, atol=1e-12)


def test_square_case_is_the_papers_rank_one_blocks():
    # n = m², m blocks: block (i, j) of the dense matrix is L_i[:, j] R_j[i, :] (Dao et al., P L Pᵀ R with the
    # outputs in L's block order)
    m = 4
    layer = _random(m * m, m * m, m)
    dense = layer.to_dense().numpy()
    L, R = layer.L.detach().numpy(), layer.R.detach().numpy()
    for i in range(m):
        for j in range(m):
            np.testing.assert_allclose(dense[i * m:(i + 1) * m, j * m:(j + 1) * m], np.outer(L[i, :, j], R[j, i, :]),
                                       rtol=0, atol=1e-12)


@pytest.mark.parametrize("in_features, out_features", [(16, 64), (64, 16), (12, 20), (256, 1024)])
def test_default_blocks_connect_every_input_to_every_output(in_features, out_features):
    layer = _random(in_features, out_features, None)
    k, p, q, s = layer.sizes
    assert k == default_nblocks(in_features, out_features) and q >= k
    assert np.all(reference_matrix(layer) != 0)


def test_fewer_hidden_units_than_blocks_leave_zero_blocks():
    layer = _random(8, 8, 4)  # p = s = q = 2 < k = 4: each L block reads 2 of the 4 R blocks
    dense = reference_matrix(layer)
    blocks = np.abs(dense).reshape(4, 2, 4, 2).sum(axis=(1, 3))
    assert ((blocks > 0).sum(axis=1) == 2).all()


def test_sizes_parameters_and_defaults():
    assert [default_nblocks(n, n) for n in (1, 3, 4, 15, 16, 768, 1024, 4096)] == [1, 1, 2, 2, 4, 16, 32, 64]
    assert default_nblocks(256, 1024) == default_nblocks(1024, 256) == 16
    assert monarch_sizes(10, 7, 3) == (3, 4, 3, 3)
    for n, k in ((64, 8), (64, 4), (64, 1)):  # 2n²/k for an n → n layer with k | n
        layer = Monarch(n, n, k, bias=False)
        assert sum(p.numel() for p in layer.parameters()) == 2 * n * n // k == layer.cost().params
    layer = Monarch(10, 7, 3)
    assert layer.R.shape == (3, 3, 4) and layer.L.shape == (3, 3, 3) and layer.bias.shape == (7,)
    assert "nblocks=3" in repr(layer) and "bias=True" in repr(layer)
    assert isinstance(StructuredLayer.create("monarch", 6, 4, nblocks=2), Monarch)
    for bad in (0, -1, 2.0, True, "4"):
        with pytest.raises(ValueError, match="nblocks must be a positive int"):
            Monarch(8, 8, bad)


def test_padded_parameters_do_not_reach_the_output():
    layer = _random(10, 7, 3)  # inputs padded 10 → 12, outputs cropped 9 → 7
    x = torch.randn(5, 10, dtype=torch.float64)
    layer(x).square().sum().backward()
    assert torch.all(layer.R.grad[-1, :, 2:] == 0)  # R's last block: columns 10, 11 meet padding
    assert torch.all(layer.L.grad[-1, 1:, :] == 0)  # L's last block: rows 7, 8 are cropped
    with torch.no_grad():
        layer.R[-1, :, 2:] = 123.0
        layer.L[-1, 1:, :] = -7.0
    np.testing.assert_allclose(layer.to_dense().numpy(), reference_matrix(layer), rtol=0, atol=1e-12)


def test_init_has_linear_scale():
    torch.manual_seed(0)
    layer = Monarch(1024, 512)
    target = 1 / (3 * 1024)  # an nn.Linear(1024, ·) weight entry
    assert abs(layer.to_dense().var().item() / target - 1) < 0.1
    assert layer.bias.abs().max().item() <= 1 / 1024**0.5


def _linear(weight, bias=True):
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias).double()
    with torch.no_grad():
        linear.weight.copy_(weight)
    return linear


@pytest.mark.parametrize("in_features, out_features, nblocks", SHAPES)
def test_from_linear_is_exact_on_monarch_matrices(in_features, out_features, nblocks):
    source = _random(in_features, out_features, nblocks, seed=3)
    linear = _linear(source.to_dense())
    layer = Monarch.from_linear(linear, nblocks=nblocks)
    torch.testing.assert_close(layer.to_dense(), linear.weight, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.bias, linear.bias, rtol=0, atol=0)
    x = torch.randn(4, in_features, dtype=torch.float64)
    torch.testing.assert_close(layer(x), linear(x), rtol=0, atol=1e-12)


def _block_svd_error(weight: np.ndarray, k, p, q, s) -> float:
    """‖W − nearest Monarch‖_F by Eckart–Young, pair by pair: each (output block, input block) pair of the cropped
    matrix keeps as many singular values as hidden units join them."""
    out_features, in_features = weight.shape
    squared = 0.0
    for i in range(k):
        for j in range(k):
            block = weight[i * s:(i + 1) * s, j * p:(j + 1) * p]
            if block.size == 0:
                continue
            rank = sum(1 for h in range(k * q) if h % k == i and h // q == j)
            sigma = np.linalg.svd(block, compute_uv=False)
            squared += (sigma[rank:] ** 2).sum()
    return float(np.sqrt(squared))


@pytest.mark.parametrize("in_features, out_features, nblocks", SHAPES)
def test_from_linear_error_is_the_dropped_singular_values(in_features, out_features, nblocks):
    torch.manual_seed(1)
    linear = nn.Linear(in_features, out_features).double()
    layer = Monarch.from_linear(linear, nblocks=nblocks)
    weight = linear.weight.detach().numpy()
    error = np.linalg.norm(layer.to_dense().numpy() - weight)
    np.testing.assert_allclose(error, _block_svd_error(weight, *layer.sizes), rtol=1e-9, atol=1e-12)
    # no Monarch matrix of the shape is nearer: random ones, and the projection's own perturbations
    generator = torch.Generator().manual_seed(2)
    for _ in range(5):
        other = Monarch(in_features, out_features, nblocks, dtype=torch.float64)
        with torch.no_grad():
            other.L.copy_(layer.L + 1e-3 * torch.randn(layer.L.shape, generator=generator, dtype=torch.float64))
            other.R.copy_(layer.R + 1e-3 * torch.randn(layer.R.shape, generator=generator, dtype=torch.float64))
        assert np.linalg.norm(other.to_dense().numpy() - weight) >= error - 1e-12


def test_from_linear_keeps_dtype_device_and_bias_and_checks_its_input():
    linear = nn.Linear(12, 8, bias=False)
    layer = Monarch.from_linear(linear)
    assert layer.R.dtype == torch.float32 and layer.bias is None and layer.nblocks == default_nblocks(12, 8)
    assert Monarch.exact_from_linear is False
    with pytest.raises(TypeError, match="expects an nn.Linear"):
        Monarch.from_linear(nn.Conv1d(3, 3, 1))


@pytest.mark.parametrize("in_features, out_features, nblocks", [(16, 16, 4), (10, 7, 3), (5, 12, 4), (24, 8, 2)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [(), (3,), (2, 5)], ids=str)
def test_cost_equals_the_report(in_features, out_features, nblocks, bias, batch):
    torch.manual_seed(0)
    layer = Monarch(in_features, out_features, nblocks, bias=bias)
    r = structlin.report(layer, torch.randn(*batch, in_features))
    assert not r.unsupported()
    assert r.total == layer.cost(batch)


def test_swap_starts_from_the_projection():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16)).double()
    monarch = _random(16, 32, 4, seed=5)
    with torch.no_grad():
        model[0].weight.copy_(monarch.to_dense())  # this one is a Monarch matrix: swapped exactly
    expected = {name: Monarch.from_linear(model.get_submodule(name), nblocks=4).to_dense() for name in ("0", "2")}
    result = structlin.swap(model, "monarch", nblocks=4)
    assert {entry.method for entry in result} == {"closed-form"}
    for name, dense in expected.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, Monarch) and layer.nblocks == 4
        torch.testing.assert_close(layer.to_dense(), dense, rtol=0, atol=0)
    errors = {entry.names[0]: entry.relative_error for entry in result}
    assert errors["0"] < 1e-12 < errors["2"] < 1
