import dataclasses
import json
import math
import re

import pytest
import torch
from torch import nn

import structlin
from structlin import Cost, StructuredLayer, available_layers
from structlin.costs import fft_flops, fwht_flops, rfft_flops
from structlin.report import Report
from structlin.transforms import fwht


def _linear_forward(rows, i, o, bias=True):
    return 2 * rows * i * o + (rows * o if bias else 0)


def _linear_backward(rows, i, o, bias=True):
    """Input and weight gradients (a matmul each) and the bias gradient: the output gradient summed over rows."""
    return 4 * rows * i * o + ((rows - 1) * o if bias else 0)


@pytest.mark.parametrize("batch", [(7,), (2, 3, 5), ()])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_counts(batch, bias):
    layer = nn.Linear(12, 9, bias=bias)
    r = structlin.report(layer, torch.randn(*batch, 12))
    rows = math.prod(batch)
    assert r.total == Cost(
        params=12 * 9 + (9 if bias else 0),
        forward_flops=_linear_forward(rows, 12, 9, bias),
        backward_flops=_linear_backward(rows, 12, 9, bias),
        saved_bytes=rows * 12 * 4,  # the input, for the weight gradient
    )
    assert r.row("").trainable_params == r.total.params
    assert not r.unsupported()  # a 1-D input's matmul backward runs the in-place view squeeze_ (0 FLOPs)


def test_macs_are_half_the_flops_and_the_header_says_so():
    r = structlin.report(nn.Linear(10, 10, bias=False), torch.randn(4, 10), unit="macs")
    assert r.total.forward_flops == 800
    text = str(r)
    assert "400 forward MACs" in text and "MACs = FLOPs / 2" in text and "multiply-add = 2" in text
    with pytest.raises(ValueError, match="unit must be one of"):
        structlin.report(nn.Linear(2, 2), torch.randn(1, 2), unit="ops")


class _Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x)))


def _nested(d=8):
    return nn.Sequential(_Block(d), nn.Sequential(nn.ReLU(), _Block(d)), nn.Linear(d, 3))


def test_nested_hierarchy_and_totals():
    d, rows = 8, 5
    model = _nested(d)
    r = structlin.report(model, torch.randn(rows, d))
    assert [row.name for row in r.rows] == [name for name, _ in model.named_modules()]
    assert r.row("1.1.fc2").type == "Linear" and r.row("1.1").type == "_Block" and r.row("").type == "Sequential"
    assert r.row("1.1.fc2").depth == 3
    # each Linear measured alone; each GELU/ReLU/residual add is one op per element
    assert r.row("1.1.fc1").forward_flops == _linear_forward(rows, d, 2 * d)
    assert r.row("1.1.act").forward_flops == rows * 2 * d
    assert r.row("1.1").self_cost.forward_flops == rows * d  # the residual add
    assert r.row("1.0").forward_flops == rows * d
    # backward: each Linear exactly its own; the residual's gradient sum belongs to the block, not to fc1
    assert r.row("1.1.fc1").backward_flops == _linear_backward(rows, d, 2 * d)
    assert r.row("1.1.fc2").backward_flops == _linear_backward(rows, 2 * d, d)
    assert r.row("1.1").self_cost.backward_flops == rows * d
    assert r.row("2").backward_flops == _linear_backward(rows, d, 3)
    # totals: the root row, the sum of the modules' own counts, each row its own plus its children's
    assert r.total == r.row("").cost
    assert sum((row.self_cost for row in r.rows), Cost()) == r.total
    for row in r.rows:
        children = [c for c in r.rows if c.depth == row.depth + 1 and c.name.startswith(row.name)]
        assert row.cost == row.self_cost + sum((c.cost for c in children), Cost())
    assert r.total.params == sum(p.numel() for p in model.parameters())


def _table(r: Report, max_depth: int | None = None) -> tuple[str, list[str]]:
    """The header line and the row lines of ``r.format(max_depth)``."""
    lines = r.format(max_depth).splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("------"))
    return lines[rule - 1], lines[rule + 1: rule + 1 + len(r.visible_rows(max_depth))]


def _module_column(r: Report, max_depth: int | None = None) -> list[str]:
    """The module cells of the text table, indentation kept."""
    return [re.match(r" *\S+", line).group() for line in _table(r, max_depth)[1]]


def _marked_lines(r: Report, max_depth: int | None = None) -> list[str]:
    """The module cells (without indentation) of the text table's rows that carry a ``?``."""
    return [line.split()[0] for line in _table(r, max_depth)[1] if "?" in line]


def test_max_depth_folds_the_text():
    r = structlin.report(_nested(), torch.randn(2, 8), max_depth=1)
    assert _module_column(r) == ["(root)", "  0", "  1", "  2"]
    assert _module_column(r, max_depth=3) == [
        "(root)", "  0", "    fc1", "    act", "    fc2", "  1", "    0", "    1", "      fc1", "      act",
        "      fc2", "  2"]
    assert "1.1.fc1" in r.with_options(max_depth=None).to_markdown()  # markdown: qualified names
    assert "1.1.fc1" not in r.to_markdown()


def test_compare_with_itself_is_all_ones():
    model = _nested()
    x = torch.randn(3, 8)
    comparison = structlin.report(model, x).compare(structlin.report(model, x))
    assert comparison.names == [name for name, _ in model.named_modules()]
    for name in comparison.names:
        assert comparison.ratios(name) == {"params": 1.0, "forward_flops": 1.0, "backward_flops": 1.0, "saved_bytes": 1.0}
    assert "(root)" in str(comparison) and json.loads(comparison.to_json())["rows"][0]["ratios"]["params"] == 1.0


def test_comparison_text():
    x = torch.randn(4, 16)
    before = structlin.report(nn.Sequential(nn.Linear(16, 16)), x, scale="raw")
    after = structlin.report(nn.Sequential(structlin.ACDC(16, 16, depth=1)), x)
    last_row = before.compare(after).format().splitlines()[-1]  # module "0"
    ratio = f"{after.row('0').params / 272:.3g}"
    assert last_row.split()[:4] == ["0", "Linear→ACDC", f"272→{after.row('0').params}", ratio]
    kilo = structlin.report(nn.Sequential(nn.Linear(16, 16)), x, scale="K").compare(before)
    assert "0.272→0.272K 1" in str(kilo)  # a unit both counts share is written once


def test_json_round_trip():
    model = nn.Sequential(structlin.ACDC(16, 8, depth=2), nn.ReLU(), nn.Linear(8, 4))
    r = structlin.report(model, torch.randn(3, 16), unit="macs", max_depth=1)
    again = Report.from_json(r.to_json())
    assert again == r
    assert again.to_dict() == r.to_dict() == json.loads(r.to_json())
    assert again.row("0").dense == r.row("0").dense is not None


def test_report_changes_nothing():
    model = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), structlin.ACDC(6, 6, depth=2))
    model[0].weight.grad = torch.full_like(model[0].weight, 3.0)
    model[0].bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 6)
    r = structlin.report(model, x)
    assert torch.equal(model[0].weight.grad, torch.full_like(model[0].weight, 3.0))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "0.weight")
    assert model[0].bias.requires_grad is False and model[0].weight.requires_grad
    for k, v in model.state_dict().items():  # parameters and BatchNorm's running statistics
        assert torch.equal(v, before[k]), k
    assert x.grad is None and not x.requires_grad
    assert r.row("").trainable_params == r.total.params - 6


def test_backward_false_counts_no_backward():
    r = structlin.report(nn.Linear(5, 5), torch.randn(2, 5), backward=False)
    assert r.total.backward_flops == 0 and r.total.forward_flops == _linear_forward(2, 5, 5)
    assert "backward not run" in str(r)


def test_input_size_and_input_errors():
    layer = nn.Linear(4, 3)
    assert structlin.report(layer, input_size=(2, 4)).total == structlin.report(layer, torch.randn(2, 4)).total
    with pytest.raises(ValueError, match="needs example inputs"):
        structlin.report(layer)
    with pytest.raises(ValueError, match="not both"):
        structlin.report(layer, torch.randn(2, 4), input_size=(2, 4))
    with pytest.raises(TypeError, match="nn.Module"):
        structlin.report(lambda x: x, torch.randn(2))
    with pytest.raises(KeyError, match="no module named"):
        structlin.report(layer, torch.randn(2, 4)).row("missing")


# --- structured ops are counted ------------------------------------------------------------------------------

class _Spectral(nn.Module):
    """rfft, a complex×complex multiply, a real×complex multiply and irfft."""

    def __init__(self, n):
        super().__init__()
        self.filter = nn.Parameter(torch.randn(n // 2 + 1, dtype=torch.complex64))
        self.n = n

    def forward(self, x):
        spectrum = torch.fft.rfft(x) * self.filter
        return torch.fft.irfft(spectrum * 2.0, n=self.n)


def test_fft_and_complex_products_are_counted():
    n, rows = 64, 3
    r = structlin.report(_Spectral(n), torch.randn(rows, n))
    ops = r.by_operator()
    bins = rows * (n // 2 + 1)
    assert ops["aten._fft_r2c"][0] == rows * rfft_flops(n)
    assert ops["aten._fft_c2r"][0] == rows * rfft_flops(n)
    assert ops["aten.mul"][0] == 6 * bins + 2 * bins  # complex×complex, then complex×real
    assert not r.unsupported()
    c2c = structlin.report(nn.Identity(), torch.randn(rows, n, dtype=torch.complex64))
    assert c2c.total.forward_flops == 0
    r2 = structlin.report(_Lambda(lambda x: torch.fft.fft(x)), torch.randn(rows, n, dtype=torch.complex64), backward=False)
    assert r2.total.forward_flops == rows * fft_flops(n)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_fwht_is_counted_forward_and_backward():
    rows, n = 4, 32
    r = structlin.report(_Lambda(fwht), torch.randn(rows, n))
    assert r.total.forward_flops == r.total.backward_flops == rows * fwht_flops(n)


@torch.library.custom_op("structlin_test::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    """An op with no FLOP formula."""
    return x * 2


@mystery.register_fake
def _(x):
    return torch.empty_like(x)


def test_unknown_op_is_reported_not_zero():
    model = nn.Sequential(nn.Linear(4, 4), _Lambda(mystery))
    r = structlin.report(model, torch.randn(2, 4), backward=False)
    assert r.unsupported() == {"structlin_test.mystery": 1}
    assert r.row("1").flops_known is False and r.row("0").flops_known is True
    assert r.row("0").forward_flops == _linear_forward(2, 4, 4)
    text = str(r)
    assert "?" in text and "structlin_test.mystery (1 call)" in text
    assert Report.from_json(r.to_json()).unsupported() == {"structlin_test.mystery": 1}


def test_unknown_op_marks_the_row_it_ran_in_not_its_ancestors():
    inner = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), _Lambda(mystery)))
    model = nn.Sequential(inner, _Lambda(mystery), nn.Linear(4, 2))
    r = structlin.report(model, torch.randn(3, 4), backward=False)
    assert r.unsupported() == {"structlin_test.mystery": 2} and r.unsupported("0") == {"structlin_test.mystery": 1}
    assert r.marked() == ["0.1.1", "1"]
    assert r.marked(max_depth=1) == ["0", "1"]  # 0.1.1 is folded into 0
    assert r.marked(max_depth=0) == [""]
    assert not r.row("").flops_known and not r.row("0.1").flops_known and r.row("2").flops_known
    assert _marked_lines(r) == ["1", "1"]  # "0.1.1" and "1", by the last part of their names
    assert _marked_lines(r, max_depth=1) == ["0", "1"]
    footer = str(r).split("\n? = ")[1]
    assert footer.count("structlin_test.mystery") == 1 and "(2 calls)" in footer and "lower bounds" in footer


def test_backward_columns_are_left_out_when_backward_was_not_run():
    model, x = _nested(), torch.randn(3, 8)
    forward_only = structlin.report(model, x, backward=False)
    for text in (str(forward_only), forward_only.to_markdown()):
        assert "bwd" not in text and "fwd FLOPs" in text
    assert "backward not run" in str(forward_only)
    comparison = forward_only.compare(structlin.report(model, x))
    assert not comparison.backward and "bwd" not in str(comparison) and "fwd FLOPs" in str(comparison)
    both = structlin.report(model, x)
    assert "bwd FLOPs" in str(both) and "bwd FLOPs" in str(both.compare(both))


def test_dense_columns_only_with_structured_layers():
    x = torch.randn(3, 16)
    plain = str(structlin.report(nn.Sequential(nn.Linear(16, 16), nn.ReLU()), x))
    assert "dense" not in plain
    model = nn.Sequential(structlin.ACDC(16, 16, depth=2), nn.ReLU())
    structured = structlin.report(model, x)
    header, rows = _table(structured)
    assert header.split()[-3:] == ["params/dense", "fwd/dense", "bwd/dense"]
    row = structured.row("0")
    ratios = [f"{getattr(row, f) / getattr(row.dense, f):.3g}" for f in ("params", "forward_flops", "backward_flops")]
    assert rows[1].split()[-3:] == ratios and len(rows[2].split()) == 6  # the ReLU has no dense alternative
    header, rows = _table(structlin.report(model, x, backward=False))
    assert header.split()[-2:] == ["params/dense", "fwd/dense"]


def test_scale_writes_every_count_in_one_unit():
    layer, x = nn.Linear(64, 32), torch.randn(8, 64)  # 2080 params, 33024 forward FLOPs, 2 KiB saved
    raw = structlin.report(layer, x, scale="raw")
    assert "2080 params, 33024 forward FLOPs" in str(raw) and "2048B saved" in str(raw)
    kilo = raw.with_options(scale="K")
    assert "2.08K params, 33.0K forward FLOPs" in str(kilo) and "2.00KiB saved" in str(kilo)
    assert "0.00208M params, 0.0330M forward FLOPs" in str(raw.with_options(scale="M"))
    assert "16.5K forward MACs" in str(raw.with_options(unit="macs", scale="K"))
    assert "2.08K params, 33K forward FLOPs" in str(raw.with_options(scale="auto"))
    assert Report.from_json(kilo.to_json()) == kilo
    with pytest.raises(ValueError, match="scale must be one of auto, raw, K, M, G, T"):
        structlin.report(layer, x, scale="kilo")


class _ALayerWithAVeryLongClassNameThatKeepsGoingOnAndOn(nn.Module):
    def __init__(self, depth):
        super().__init__()
        self.a_submodule_with_a_long_descriptive_name = (
            _ALayerWithAVeryLongClassNameThatKeepsGoingOnAndOn(depth - 1) if depth else nn.Linear(4, 4))

    def forward(self, x):
        return self.a_submodule_with_a_long_descriptive_name(x)


def test_text_fits_in_100_columns():
    model = nn.Sequential(_ALayerWithAVeryLongClassNameThatKeepsGoingOnAndOn(6), structlin.ACDC(4, 4, depth=1))
    x = torch.randn(3, 4)
    r = structlin.report(model, x)
    for text in (str(r), str(r.compare(r)), str(r.with_options(unit="macs"))):
        assert max(len(line) for line in text.splitlines()) <= 100
        assert "…" in text  # the names and types were shortened, not the numbers
    assert f"{r.total.forward_flops}" in str(r.with_options(scale="raw"))
    assert "a_submodule_with_a_long_descriptive_name" in r.to_markdown()  # markdown is not cut


# --- every structured kind: measured == cost() ---------------------------------------------------------------

#: option sets per layer kind; kinds not listed are checked with their defaults
LAYER_OPTIONS = {
    "acdc": [
        {},
        {"depth": 3, "activation": "relu"},
        {"depth": 2, "activation": "gelu", "permute": False, "bias": False},
        {"depth": 2, "activation": nn.Hardswish()},  # a module that is not elementwise: gathers around it
        {"depth": 2, "diagonal_bias": True},  # block offsets from the diagonal biases, on either path
        {"depth": 3, "diagonal_bias": True, "activation": "tanh", "permute": "riffle"},
        {"depth": 2, "diagonal_bias": True, "path": "dense", "bias": False},
    ],
    "fastfood": [{}, {"learn": ("S",), "bias": False}, {"learn": ()}],
    "lowrank": [{"rank": 3}, {"rank": 2, "bias": False}],
    "quadratic": [
        {"form": "fan"},
        {"form": "xu", "bias": False},
        {"form": "lowrank", "rank": 3},
        {"form": "xu", "branch": "acdc", "depth": 2},
        {"form": "fan", "branch": "fastfood"},
        {"form": "lowrank", "rank": 2, "branch": "lowrank"},
        # x read three times (square, dense first-order group, acdc part g); scaled parts with and without bias
        {"form": "fan", "branch": "acdc", "depth": 1, "linear_branch": "dense", "bias": False},
    ],
}
SHAPES = [(16, 16, (5,)), (12, 20, (2, 3)), (20, 7, ())]


def _kind_cases():
    for kind in available_layers():
        for i, options in enumerate(LAYER_OPTIONS.get(kind, [{}])):
            for in_f, out_f, batch in SHAPES:
                yield pytest.param(kind, options, in_f, out_f, batch, id=f"{kind}-{i}-{in_f}x{out_f}-{batch}")


@pytest.mark.parametrize("kind, options, in_features, out_features, batch", list(_kind_cases()))
def test_measured_count_equals_cost(kind, options, in_features, out_features, batch):
    torch.manual_seed(0)
    layer = StructuredLayer.create(kind, in_features, out_features, **options)
    r = structlin.report(layer, torch.randn(*batch, in_features))
    assert not r.unsupported()
    assert r.total == layer.cost(batch)


def test_a_wrong_cost_does_not_change_the_report():
    class Boasting(structlin.ACDC):
        def cost(self, batch_shape=()):
            return Cost(1, 1, 1, 1)

    torch.manual_seed(0)
    honest = structlin.report(structlin.ACDC(16, 16, depth=2), torch.randn(3, 16)).total
    torch.manual_seed(0)
    assert structlin.report(Boasting(16, 16, depth=2), torch.randn(3, 16)).total == honest


def test_structured_rows_carry_the_dense_alternative():
    layer = structlin.ACDC(32, 16, depth=2)
    model = nn.Sequential(layer)
    r = structlin.report(model, torch.randn(2, 5, 32))
    row = r.row("0")
    dense = structlin.report(nn.Linear(32, 16), torch.randn(10, 32)).total
    assert row.kind == "acdc" and row.dense == dense
    assert row.ratios["params"] == row.params / dense.params
    assert row.ratios["forward_flops"] == row.forward_flops / dense.forward_flops
    assert r.row("").dense is None and r.row("").ratios is None


def test_torch_dct_layer_is_counted():
    torch_dct = pytest.importorskip("torch_dct")

    class DctACDC(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.a, self.d = nn.Parameter(torch.randn(n)), nn.Parameter(torch.randn(n))

        def forward(self, x):
            return torch_dct.idct(self.d * torch_dct.dct(self.a * x, norm="ortho"), norm="ortho")

    n, rows = 16, 3
    r = structlin.report(DctACDC(n), torch.randn(rows, n))
    assert r.by_operator()["aten._fft_r2c"][0] >= rows * rfft_flops(n)
    assert r.total.forward_flops > 2 * rows * rfft_flops(n) and r.total.backward_flops > 0
    assert not r.unsupported()


# --- against other counters, where installed ---------------------------------------------------------------

def _dense_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64, bias=False), nn.Linear(64, 16, bias=False), nn.Linear(16, 8, bias=False))


def test_dense_model_agrees_with_fvcore():
    fvcore = pytest.importorskip("fvcore.nn")
    model, x = _dense_mlp(), torch.randn(6, 32)
    analysis = fvcore.FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    macs = analysis.total()  # fvcore counts one multiply-add as one "flop"
    assert 2 * macs == structlin.report(model, x).total.forward_flops
    assert 2 * analysis.by_module()["1"] == structlin.report(model, x).row("1").forward_flops


def test_dense_model_agrees_with_ptflops():
    ptflops = pytest.importorskip("ptflops")
    model = _dense_mlp()
    macs, params = ptflops.get_model_complexity_info(
        model, (32,), as_strings=False, print_per_layer_stat=False, backend="pytorch"
    )
    r = structlin.report(model, torch.randn(1, 32))  # ptflops runs a batch of one
    assert 2 * macs == r.total.forward_flops and params == r.total.params


def test_counter_comparison_example_shows_the_gap():
    """The docs' comparison model: FlopCounterMode alone sees 0 for the torch_dct ACDC and rfft layers; the report
    counts their FFTs and pointwise ops, and agrees with it on the dense Linear's matmul."""
    pytest.importorskip("torch_dct")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "compare_counters.py"
    spec = importlib.util.spec_from_file_location("compare_counters", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    counts = {name: (example.flop_counter_mode_count(m, x)[0], example.structlin_count(m, x)[0])
              for name, m, x in example.layers()}
    rows = example.BATCH
    assert counts["ACDC (torch_dct)"][0] == counts["rfft layer"][0] == 0
    assert counts["ACDC (torch_dct)"][1] > 0
    assert counts["rfft layer"][1] == rows * (2 * rfft_flops(example.N) + 6 * (example.N // 2 + 1))
    for name in ("Linear 1024² (2-D input)", "Linear 1024² (3-D input)"):
        assert counts[name][1] == counts[name][0] + rows * example.N  # the same matmul, plus the bias add


def test_norms_softmax_and_attention_have_formulas():
    rows, d = 6, 16
    ln = structlin.report(nn.LayerNorm(d), torch.randn(rows, d))
    assert ln.total.forward_flops == 7 * rows * d + 4 * rows  # 5 per element, affine 2, 4 per row
    sm = structlin.report(nn.Softmax(dim=-1), torch.randn(rows, d))
    assert sm.total.forward_flops == 5 * rows * d and sm.total.backward_flops == 4 * rows * d
    bn = structlin.report(nn.BatchNorm1d(d), torch.randn(rows, d))
    assert bn.total.forward_flops == 7 * rows * d + 4 * d + 6 * d  # + running statistics (the step count is int)
    encoder = nn.TransformerEncoderLayer(d, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    r = structlin.report(encoder, torch.randn(2, 5, d))
    assert not r.unsupported() and r.row("self_attn").forward_flops > 0 and r.row("norm1").forward_flops > 0


def test_same_counts_on_every_device(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), structlin.ACDC(32, 16, depth=2))
    x = torch.randn(4, 16)
    on_cpu = structlin.report(model, x)
    on_device = structlin.report(model.to(device), x.to(device))
    assert on_device.rows == on_cpu.rows


def test_a_module_called_twice_counts_both_calls_and_its_parameters_once():
    layer = nn.Linear(6, 6)
    r = structlin.report(nn.Sequential(layer, nn.Tanh(), layer), torch.randn(4, 6))
    assert [row.name for row in r.rows] == ["", "0", "1"]  # named_modules lists a shared module once
    assert r.total.params == r.row("0").params == 42
    assert r.row("0").forward_flops == 2 * _linear_forward(4, 6, 6)
    # the two calls' weight and bias gradients are summed by the engine: 36 + 6 more adds
    assert r.row("0").backward_flops == 2 * _linear_backward(4, 6, 6) + 36 + 6


def test_acdc_on_the_dense_path_reports_no_unsupported_op():
    """The dense path builds the matrix from a cached ``torch.eye`` (a constant, 0 FLOPs), which the report knows."""
    layer = structlin.ACDC(16, 32, depth=2, path="dense")
    r = structlin.report(layer, torch.randn(5, 16))
    assert not r.unsupported()
    assert r.total.forward_flops > 0
