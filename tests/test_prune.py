"""structlin.prune.shrink: pair discovery, exact rebuilds, the tolerance, no mutation, errors."""

import copy
import functools
import json

import pytest
import torch
from torch import nn

import structlin
from structlin.prune import ScoreContext, ShrinkResult, default_metric, find_pairs, shrink, taylor_score
from structlin.prune._data import Split
from structlin.prune._pairs import masked, rebuild, resolve_pairs


def mlp(widths=(8, 24, 20, 3), act=nn.Tanh, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, dtype=dtype))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def regression_data(model, rows=96, seed=1):
    """Inputs and the model's own outputs as targets: any removal that changes the function raises the MSE."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x = torch.randn(rows, model[0].in_features, generator=g, dtype=dtype)
    with torch.no_grad():
        y = model(x)
    return x, y


def classification_data(rows=240, features=8, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


@functools.lru_cache(maxsize=None)
def _trained(rows, steps):
    x, y = classification_data()
    x, y = x[:rows], y[:rows]
    model = mlp((8, 32, 32, 3), act=nn.ReLU)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def trained_classifier(x, y, steps=150):
    """A copy of a 8-32-32-3 ReLU net trained on the first ``len(x)`` rows of ``classification_data()``."""
    torch.testing.assert_close(x, classification_data()[0][:len(x)])
    return copy.deepcopy(_trained(len(x), steps))


def zero_columns(model, pairs_result):
    """The original model with each removed unit's outgoing column set to zero (an independent reference)."""
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for p in pairs_result:
            second = modules[p.second]
            removed = sorted(set(range(p.units_before)) - set(p.kept))
            second.weight[:, removed] = 0
    return ref


# ---------------------------------------------------------------- pairs


def test_find_pairs_in_nested_sequentials():
    model = nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.1), nn.Linear(6, 5),    # pair through two elementwise modules
        nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Linear(7, 3)),      # nested
        nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2),             # BatchNorm is not elementwise: no pair
        nn.Linear(2, 2),                                                 # Linear → Linear: a pair
    )
    found = [(p.first, p.second, p.units) for p in find_pairs(model)]
    # the outer Sequential's pairs first, then the nested one's (named_modules order)
    assert found == [("0", "3", 6), ("7", "8", 2), ("4.0", "4.2", 7)]


def test_model_without_pairs_is_a_clear_error():
    x = torch.randn(10, 4)
    data = ((x, torch.zeros(10, dtype=torch.long)),) * 2
    with pytest.raises(ValueError, match="no prunable pair found.*nn.Linear layers are \\['0'\\]"):
        shrink(nn.Sequential(nn.Linear(4, 3)), data)
    with pytest.raises(ValueError, match="no prunable pair"):
        shrink(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 3)), data)
    with pytest.raises(TypeError, match="nn.Module that contains Linear pairs"):
        shrink(nn.Linear(4, 3), data)


def test_explicit_pairs_are_validated():
    model = mlp()
    with pytest.raises(ValueError, match="'1' is not an nn.Linear"):
        resolve_pairs(model, [("0", "1")])
    with pytest.raises(ValueError, match="does not chain"):
        resolve_pairs(model, [("0", "4")])
    with pytest.raises(ValueError, match="first Linear of more than one pair"):
        resolve_pairs(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 3), nn.Linear(3, 3)), [("0", "1"), ("0", "2")])
    with pytest.raises(ValueError, match="pairs is empty"):
        resolve_pairs(model, [])
    with pytest.raises(TypeError, match="tuple of qualified names"):
        resolve_pairs(model, ["0"])


# ---------------------------------------------------------------- exact rebuild


@pytest.mark.parametrize("bias", [True, False])
def test_rebuild_equals_original_with_removed_units_zeroed(bias):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 10, bias=bias), nn.GELU(), nn.Linear(10, 9, bias=bias), nn.SiLU(),
                          nn.Linear(9, 4, bias=bias)).double()
    pairs = find_pairs(model)
    keep = [torch.tensor([0, 3, 4, 8]), torch.tensor([1, 2, 5, 6, 7])]
    x = torch.randn(32, 6, dtype=torch.float64)
    masks = [torch.zeros(p.units, dtype=torch.float64).index_fill(0, k, 1.0) for p, k in zip(pairs, keep)]
    with torch.no_grad(), masked(model, pairs, masks):
        expected = model(x)
    original = {n: p.clone() for n, p in model.named_parameters()}
    rebuild(model, pairs, keep)
    assert [m.weight.shape for m in model if isinstance(m, nn.Linear)] == [(4, 6), (5, 4), (4, 5)]
    assert torch.equal(model[0].weight, original["0.weight"][keep[0]])
    assert torch.equal(model[2].weight, original["2.weight"][keep[1]][:, keep[0]])
    assert torch.equal(model[4].weight, original["4.weight"][:, keep[1]])
    if bias:
        assert torch.equal(model[0].bias, original["0.bias"][keep[0]])
        assert torch.equal(model[4].bias, original["4.bias"])
    with torch.no_grad():
        assert torch.allclose(model(x), expected, rtol=0, atol=1e-12)


def test_shrunk_model_before_finetuning_is_the_masked_original():
    x, y = classification_data()
    model = trained_classifier(x[:160], y[:160])
    result = shrink(model, ((x[:160], y[:160]), (x[160:], y[160:])), tolerance=0.05, finetune_steps=0, round_steps=0)
    assert result.units_after < result.units_before
    reference = zero_columns(model, result.layers)
    with torch.no_grad():
        assert torch.allclose(result.model(x), reference(x), rtol=0, atol=1e-12)
    assert result.metric_after == result.metric_pruned == default_metric(reference(x[160:]), y[160:])


def test_units_with_zero_outgoing_weights_are_always_pruned_and_change_nothing():
    model = mlp((8, 24, 20, 3))
    dead = {0: [1, 5, 6, 23], 1: [0, 19]}
    with torch.no_grad():
        model[2].weight[:, dead[0]] = 0
        model[4].weight[:, dead[1]] = 0
    x, y = regression_data(model)
    # tolerance 0 on the MSE against the model's own outputs: no unit that matters can go
    result = shrink(model, ((x, y), (x, y)), tolerance=0.0, relative=False, finetune_steps=0,
                    round_steps=0)
    for p, removed in zip(result.layers, dead.values()):
        assert p.zero_outgoing == len(removed)
        assert p.kept == sorted(set(range(p.units_before)) - set(removed))
    with torch.no_grad():
        assert torch.allclose(result.model(x), model(x), rtol=0, atol=1e-12)
    assert result.threshold == result.metric_before == 0.0
    # the rebuilt matmuls sum fewer terms, so the MSE is 0 up to rounding, not exactly
    assert result.metric_after == pytest.approx(0.0, abs=1e-24)


# ---------------------------------------------------------------- tolerance, scores, fine-tuning


@pytest.mark.parametrize("tolerance,relative", [(0.02, True), (0.05, False)])
def test_tolerance_is_respected_on_validation_data(tolerance, relative):
    x, y = classification_data()
    train, val = (x[:160], y[:160]), (x[160:], y[160:])
    model = trained_classifier(*train)
    result = shrink(model, (train, val), tolerance=tolerance, relative=relative, finetune_steps=30, lr=1e-3)
    before = default_metric(model(val[0]), val[1])
    assert result.metric_before == before
    assert result.threshold == pytest.approx(before - tolerance * (before if relative else 1.0))
    with torch.no_grad():
        after = default_metric(result.model(val[0]), val[1])
    assert after == result.metric_after >= result.threshold
    assert result.metric_pruned >= result.threshold
    assert result.units_after < result.units_before  # a 32-32 net for 3 classes has spare units


def test_dataloaders_and_regression_metric():
    model = mlp((8, 24, 20, 3))
    x, y = regression_data(model, rows=128)
    y = y + 0.05 * torch.randn_like(y)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    result = shrink(model, (loader, loader), tolerance=0.5, finetune_steps=5)
    mse = nn.functional.mse_loss(model(x), y).item()
    assert result.metric_before == pytest.approx(-mse)
    assert result.metric_after >= -1.5 * mse - 1e-12


def test_finetuning_that_hurts_is_dropped():
    x, y = classification_data()
    model = trained_classifier(x[:160], y[:160])
    result = shrink(model, ((x[:160], y[:160]), (x[160:], y[160:])), tolerance=0.02, finetune_steps=10,
                    round_steps=0, lr=1e3)
    assert result.metric_finetuned < result.metric_pruned
    assert not result.finetune_kept and result.metric_after == result.metric_pruned
    reference = zero_columns(model, result.layers)
    with torch.no_grad():
        assert torch.allclose(result.model(x), reference(x), rtol=0, atol=1e-12)


def test_taylor_score_is_activation_times_gradient():
    model = mlp((5, 7, 3), act=nn.Tanh)
    x = torch.randn(20, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    pairs = find_pairs(model)
    masks = [torch.ones(7, dtype=torch.float64)]
    ctx = ScoreContext(model, pairs, masks, Split((x, y), "train", 64), structlin.prune.default_loss,
                       model[0].weight, max_batches=1)
    (score,) = taylor_score(ctx)
    h = torch.tanh(model[0](x)).detach().requires_grad_()
    loss = nn.functional.cross_entropy(model[2](h), y)
    (g,) = torch.autograd.grad(loss, h)
    torch.testing.assert_close(score, (h * g).abs().mean(0).detach(), rtol=1e-12, atol=1e-15)


def test_magnitude_score_and_custom_score():
    x, y = classification_data()
    model = trained_classifier(x[:160], y[:160])
    data = ((x[:160], y[:160]), (x[160:], y[160:]))
    assert shrink(model, data, score="magnitude", finetune_steps=0).score == "magnitude"

    def last_first(ctx):  # a user score: later units are "more useful"
        return [torch.arange(p.units, dtype=torch.float64) for p in ctx.pairs]

    result = shrink(model, data, score=last_first, tolerance=0.5, finetune_steps=0)
    assert result.score == "last_first"
    for p in result.layers:  # the lowest-scored units go first: what is kept is a suffix
        assert p.kept == list(range(p.units_before - p.units_after, p.units_before))
    with pytest.raises(ValueError, match="unknown unit score 'nope'; valid names: magnitude, taylor"):
        shrink(model, data, score="nope")


# ---------------------------------------------------------------- inputs, mutation, dtype/device


def test_input_model_is_not_mutated_unless_inplace():
    x, y = classification_data()
    model = trained_classifier(x[:160], y[:160]).train()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    modules = list(model)
    result = shrink(model, ((x[:160], y[:160]), (x[160:], y[160:])), tolerance=0.05, finetune_steps=5)
    assert list(model) == modules and all(a is b for a, b in zip(model, modules))
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert model.training and result.model.training  # the mode is kept
    assert result.model is not model and result.units_after < result.units_before

    result = shrink(model, ((x[:160], y[:160]), (x[160:], y[160:])), tolerance=0.05, finetune_steps=5,
                    inplace=True)
    assert result.model is model and model[0] is not modules[0]
    assert model[0].out_features == result.layers[0].units_after


def test_mlp_block_in_a_larger_model_with_explicit_pairs():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 6)

        def forward(self, x):
            return x + self.fc2(self.act(self.fc1(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(), Block()])
            self.head = nn.Linear(6, 1)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(x).squeeze(-1)

    torch.manual_seed(4)
    model = Net().double()
    x = torch.randn(64, 6, dtype=torch.float64)
    y = x[:, 0] * 0.5
    data = ((x, y), (x, y))
    with pytest.raises(ValueError, match="no prunable pair found"):
        shrink(model, data)
    pairs = [("blocks.0.fc1", "blocks.0.fc2"), ("blocks.1.fc1", "blocks.1.fc2")]
    result = shrink(model, data, pairs=pairs, tolerance=0.2, finetune_steps=0, round_steps=0)
    assert [(p.first, p.second) for p in result.layers] == pairs
    assert result.model.blocks[0].fc1.out_features == result.layers[0].units_after < 16
    with torch.no_grad():
        assert torch.allclose(result.model(x), zero_columns(model, result.layers)(x), rtol=0, atol=1e-12)


def test_bad_arguments():
    x, y = classification_data()
    model = trained_classifier(x, y, steps=1)
    data = ((x, y), (x, y))
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        shrink(model, data, tolerance=-0.1)
    with pytest.raises(ValueError, match="min_units must be an integer >= 1"):
        shrink(model, data, min_units=0)
    with pytest.raises(TypeError, match="data must be a \\(train, val\\) pair"):
        shrink(model, (x, y, x))
    with pytest.raises(TypeError, match="iterator, which can be read only once"):
        shrink(model, ((x, y), iter([(x, y)])))
    with pytest.raises(ValueError, match="x and y have different lengths"):
        shrink(model, ((x, y[:5]), (x, y)))


def test_dtype_and_device_are_kept(device):
    x, y = classification_data()
    model = trained_classifier(x[:160], y[:160]).float().to(device)
    x, y = x.float(), y
    result = shrink(model, ((x[:160], y[:160]), (x[160:], y[160:])), tolerance=0.05, finetune_steps=5)
    for p in result.model.parameters():
        assert p.dtype == torch.float32 and p.device.type == device.type
    assert result.metric_after >= result.threshold


def test_result_table_and_dict():
    x, y = classification_data()
    model = trained_classifier(x[:160], y[:160])
    result = shrink(model, ((x[:160], y[:160]), (x[160:], y[160:])), tolerance=0.05, finetune_steps=3)
    assert isinstance(result, ShrinkResult) and structlin.ShrinkResult is ShrinkResult
    text = str(result)
    assert "0 → 2" in text and "2 → 4" in text and "params" in text
    d = json.loads(json.dumps(result.to_dict()))
    assert d["params_before"] == sum(p.numel() for p in model.parameters())
    assert d["params_after"] == sum(p.numel() for p in result.model.parameters()) < d["params_before"]
    assert d["forward_flops_after"] < d["forward_flops_before"]
    # the accountant's count of a Linear on B rows: 2·B·in·out + B·out
    rows = d["example_rows"]
    widths = [8, *(p["units_after"] for p in d["layers"]), 3]
    dense = sum(2 * rows * a * b + rows * b for a, b in zip(widths[:-1], widths[1:]))
    relu = sum(rows * w for w in widths[1:-1])
    assert d["forward_flops_after"] == dense + relu
    assert d["finetune_steps"] == 3 and len(d["layers"]) == 2


def test_masked_fine_tuning_between_rounds_leaves_removed_units_alone():
    from structlin.prune import _Search, _finetune_masked

    x, y = classification_data()
    model = trained_classifier(x[:160], y[:160])
    before = copy.deepcopy(model)
    pairs = find_pairs(model)
    masks = [torch.ones(32, dtype=torch.float64) for _ in pairs]
    masks[0][:10] = 0
    masks[1][5:20] = 0
    val = Split((x[160:], y[160:]), "val", 256)
    search = _Search(model, pairs, val, default_metric, model[0].weight, threshold=-1.0)
    _finetune_masked(model, pairs, masks, search, Split((x[:160], y[:160]), "train", 32),
                     structlin.prune.default_loss, 20, 1e-2, 0, model[0].weight)
    assert torch.equal(model[0].weight[:10], before[0].weight[:10])  # rows of removed units: zero gradient
    assert torch.equal(model[2].weight[:, :10], before[2].weight[:, :10])  # their outgoing columns too
    assert not torch.equal(model[0].weight[10:], before[0].weight[10:])  # kept units trained

    search.threshold = 2.0  # unreachable: the fine-tuned weights are dropped
    snapshot = copy.deepcopy(model)
    _finetune_masked(model, pairs, masks, search, Split((x[:160], y[:160]), "train", 32),
                     structlin.prune.default_loss, 5, 1e-2, 1, model[0].weight)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), snapshot.parameters()))
