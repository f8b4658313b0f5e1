"""What is particular to the quadratic convolutions (the contract they share is in ``test_conformance_conv.py``):
fused convolutions, the atrous geometry, shapes of the parts, starts, conversions and their errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import structlin
from structlin import QuadraticConv1d, QuadraticConv2d, QuadraticConv3d
from structlin.layers.conv_geometry import ConvGeometry
from structlin.layers.conv_layers import conv_layer_class, conv_layer_kinds, register_conv_layer


class _CountConvolutions(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket in (torch.ops.aten.convolution, torch.ops.aten._convolution):
            self.calls += 1
        return func(*args, **(kwargs or {}))


def _convolutions(layer, x) -> int:
    with _CountConvolutions() as mode:
        layer(x)
    return mode.calls


def _randomized(layer):
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer


@pytest.mark.parametrize("form, options, fresh, converted", [
    ("xu", {}, 1, 2), ("fan", {}, 2, 3), ("lowrank", {"rank": 2}, 2, 3),
    ("lowrank", {"rank": 2, "quadratic_dilation": 2}, 3, 3), ("xu", {"quadratic_dilation": 2}, 2, 2),
    ("xu", {"groups": 2}, 1, 2),
])
def test_parts_reading_one_input_with_one_geometry_run_as_one_convolution(form, options, fresh, converted):
    geometry = {k: v for k, v in options.items() if k == "groups"}
    layer = QuadraticConv2d(4, 6, 3, padding=1, form=form, **options)
    x = torch.randn(2, 4, 6, 6)
    assert _convolutions(layer, x) == fresh
    extra = {k: v for k, v in options.items() if k != "groups"}
    converted_layer = QuadraticConv2d.from_conv(nn.Conv2d(4, 6, 3, padding=1, **geometry), form=form, **extra)
    assert _convolutions(converted_layer, x) == converted


def test_fused_grouped_parts_equal_each_part_convolved_on_its_own():
    torch.manual_seed(0)
    layer = _randomized(QuadraticConv2d(4, 6, 3, padding=1, groups=2, form="xu", dtype=torch.float64))
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    part = {}
    for name in "abc":
        weight, bias = layer.part_dense(name)
        assert weight.shape == (6, 2, 3, 3)
        part[name] = F.conv2d(x, weight, bias, padding=1, groups=2)
    expected = part["a"] * part["b"] + part["c"]
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    channels_last = layer(x.to(memory_format=torch.channels_last))
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(channels_last, expected, rtol=0, atol=1e-12)


def test_atrous_quadratic_term_reads_a_centred_dilated_window():
    """An impulse at position t reaches U ⋆ x at t − 2, t, t + 2 (kernel 3, dilation 2 on padding 1 →
    padding 2): the same centre as the first-order window t − 1, t, t + 1."""
    torch.manual_seed(0)
    layer = _randomized(QuadraticConv1d(1, 1, 3, padding=1, form="lowrank", rank=1, quadratic_dilation=2,
                                        dtype=torch.float64))
    x = torch.zeros(1, 1, 11, dtype=torch.float64)
    x[0, 0, 5] = 1.0
    outputs = layer.branches.x_atrous(x)
    u, v = outputs["u"][0, 0], outputs["v"][0, 0]
    assert set(u.nonzero().flatten().tolist()) == {3, 5, 7} == set(v.nonzero().flatten().tolist())
    weight, _ = layer.part_dense("u")
    torch.testing.assert_close(u[[7, 5, 3]], weight.flatten(), rtol=0, atol=0)
    first = layer.branches.x(x)["w"][0, 0] - layer.part_dense("w")[1]
    assert set(first.nonzero().flatten().tolist()) == {4, 5, 6}


def test_atrous_geometry_keeps_the_output_grid_and_refuses_negative_padding():
    for kernel, stride, padding, dilation in [(3, 1, 1, 1), (4, 2, 0, 1), (5, 3, 2, 2), (2, 1, "same", 1)]:
        base = ConvGeometry.build(1, 2, 2, kernel, stride, padding, dilation)
        for more in range(4):
            wide = base.atrous(dilation + more)
            assert wide.dilation == (dilation + more,)
            for length in (9, 10, 17):
                assert wide.output_size((length,)) == base.output_size((length,))
                y = wide.conv(torch.randn(1, 2, length), torch.randn(2, 2, kernel), None)
                assert y.shape[-1] == base.output_size((length,))[0]
    with pytest.raises(ValueError, match=r"quadratic_dilation=\(1,\) would need a negative padding.*dilation=\(2,\)"):
        QuadraticConv1d(2, 2, 3, dilation=2, quadratic_dilation=1)
    assert QuadraticConv1d(2, 2, 3, padding=2, dilation=2, quadratic_dilation=1).quadratic_dilation == (1,)


def test_parameter_shapes_and_counts():
    layer = QuadraticConv2d(4, 8, 3, groups=2, form="lowrank", rank=3, quadratic_dilation=2)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {"branches.x.weight_w": (8, 2, 3, 3), "branches.x.bias_w": (8,),
                      "branches.x_atrous_ungrouped.weight_u": (3, 4, 3, 3),
                      "branches.x_atrous_ungrouped.weight_v": (3, 4, 3, 3), "branches.u_v.weight_p": (8, 3, 1, 1)}
    conv = nn.Conv2d(4, 8, 3)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(QuadraticConv2d(4, 8, 3, form="xu")) == 3 * count(conv)
    assert count(QuadraticConv2d(4, 8, 3, form="fan")) == 3 * count(conv)
    assert count(QuadraticConv2d(4, 8, 3, form="xu", bias=False)) == 3 * 8 * 4 * 9 + 8  # b_b only
    assert count(QuadraticConv2d(4, 8, 3, form="lowrank", rank=3)) == count(conv) + 2 * 3 * 4 * 9 + 8 * 3


@pytest.mark.parametrize("form", ["xu", "fan", "lowrank"])
def test_linear_start_is_the_first_order_convolution_and_random_init_has_nn_conv_scale(form):
    torch.manual_seed(0)
    layer = QuadraticConv2d(3, 5, 3, padding=1, form=form, rank=2, dtype=torch.float64)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    first = {"xu": "a", "fan": "r", "lowrank": "w"}[form]
    weight, bias = layer.part_dense(first)
    assert torch.equal(layer(x), F.conv2d(x, weight, bias, padding=1))
    random = QuadraticConv2d(3, 5, 3, form=form, rank=2, init="random")
    bound = 1 / math.sqrt(3 * 9)
    for name, p in random.named_parameters():
        fan_in = p.shape[1] * math.prod(p.shape[2:]) if p.dim() > 1 else None
        limit = bound if fan_in in (None, 27) else 1 / math.sqrt(fan_in)
        assert p.abs().max() <= limit and p.abs().max() > 0.5 * limit, name


def test_from_conv_errors_and_options():
    with pytest.raises(TypeError, match=r"QuadraticConv2d.from_conv expects an nn.Conv2d, got Conv1d"):
        QuadraticConv2d.from_conv(nn.Conv1d(2, 2, 3))
    with pytest.raises(TypeError, match="from_conv expects an nn.Conv2d, got ConvTranspose2d"):
        QuadraticConv2d.from_conv(nn.ConvTranspose2d(2, 2, 3))
    with pytest.raises(TypeError, match="sets init='linear-start'"):
        QuadraticConv2d.from_conv(nn.Conv2d(2, 2, 3), init="random")
    with pytest.raises(ValueError, match="takes bias from the convolution, which has no bias"):
        QuadraticConv2d.from_conv(nn.Conv2d(2, 2, 3, bias=False), bias=True)
    with pytest.raises(ValueError, match=r"rank=<positive int> is required for form='lowrank'"):
        QuadraticConv2d.from_conv(nn.Conv2d(2, 2, 3), form="lowrank")
    conv = nn.Conv3d(2, 4, 3, padding=1, dtype=torch.float64)
    layer = QuadraticConv3d.from_conv(conv, form="fan", quadratic_dilation=2)
    assert layer.quadratic_dilation == (2, 2, 2) and layer.separate_first_order
    assert next(layer.parameters()).dtype == torch.float64
    x = torch.randn(1, 2, 4, 5, 4, dtype=torch.float64)
    assert torch.equal(layer(x), conv(x))
    with torch.no_grad():
        layer.branches.x_x_atrous.weight_b.normal_()
    assert not torch.equal(layer(x), conv(x))


def test_extra_repr_says_the_geometry_and_the_form():
    layer = QuadraticConv2d(4, 8, (3, 5), stride=2, padding=(1, 2), dilation=(1, 2), groups=2,
                            padding_mode="reflect", form="lowrank", rank=3, quadratic_dilation=(2, 3))
    text = repr(layer)
    assert ("4, 8, kernel_size=(3, 5), stride=(2, 2), padding=(1, 2), dilation=(1, 2), groups=2, "
            "padding_mode='reflect', form='lowrank', rank=3, quadratic_dilation=(2, 3)") in text


def test_cost_of_converted_layers_equals_the_report():
    torch.manual_seed(0)
    for conv, form, extra in [(nn.Conv1d(3, 5, 4, stride=2, padding=2), "xu", {}),
                              (nn.Conv2d(4, 6, 3, padding="same", padding_mode="reflect", bias=False), "fan",
                               {"quadratic_dilation": 2}),
                              (nn.Conv2d(4, 6, 3, groups=2), "lowrank", {"rank": 2})]:
        layer = type(conv).__name__.replace("Conv", "QuadraticConv")
        layer = getattr(structlin, layer).from_conv(conv, form=form, **extra)
        x = torch.randn(2, conv.in_channels, *([9] * (conv.weight.dim() - 2)))
        measured = structlin.report(layer, x)
        assert not measured.unsupported() and measured.total == layer.cost(x.shape)


def test_xu_fused_flops_are_a_three_times_wider_conv_plus_the_product():
    layer = QuadraticConv2d(8, 16, 3, padding=1, form="xu")
    wide = nn.Conv2d(8, 48, 3, padding=1)
    x = torch.randn(2, 8, 10, 10)
    cost, reference = layer.cost(x.shape), structlin.report(wide, x).total
    outputs = 2 * 16 * 100
    assert cost.params == reference.params
    assert cost.forward_flops == reference.forward_flops + 2 * outputs  # addcmul
    assert cost.backward_flops == reference.backward_flops + 4 * outputs


def test_registry_of_convolutional_layers():
    assert conv_layer_kinds()["quadratic"] == [1, 2, 3]
    assert conv_layer_class("quadratic", 2) is QuadraticConv2d and conv_layer_class("acdc", 2) is None
    with pytest.raises(ValueError, match="already has a 2-d convolutional layer"):
        register_conv_layer("quadratic", 2)(QuadraticConv2d)
    with pytest.raises(TypeError, match="no from_conv"):
        register_conv_layer("other-test", 2)(nn.Conv2d)
    with pytest.raises(ValueError, match="dims must be 1, 2 or 3"):
        register_conv_layer("other-test", 4)


def test_example_quick_run(tmp_path):
    """The experiment script's smoke run: every conversion exact, every variant and model reported."""
    for module in ("sklearn", "mnist1d", "matplotlib"):
        pytest.importorskip(module)
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "quadratic_cnn.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "quadratic_cnn.json").read_text())
    assert (tmp_path / "quadratic_cnn.png").stat().st_size > 0
    (run,) = report["quadranet"]["runs"]
    assert run["exact"] and all(run["exact"].values())  # from_conv through swap: the same function
    assert set(run["runs"]) == {"dense-further", "lowrank-quadratic", "lowrank-all", "lowrank-scratch",
                                "lowrank-atrous-quadratic", "lowrank-atrous-all", "lowrank-atrous-scratch"}
    summary = report["quadranet"]["summary"]
    assert summary["lowrank-all"]["params"] > summary["dense-further"]["params"] == 5210
    for key in ("mnist1d", "digits"):
        entries = report["xu"][key]
        assert set(entries) == {"dense", "xu", "fan", "xu-relinear", "fan-relinear"}
        dense = entries["dense"]["params"]
        assert all(abs(e["params"] - dense) < 0.1 * dense for e in entries.values())  # equal parameter counts
        assert all(0 <= e["test_acc"]["mean"] <= 1 for e in entries.values())
