"""The quadratic-convolution configurations the conv conformance tests run over, and a float64 reference built from
explicit ``F.pad`` + ``F.conv*`` calls whose paddings are written out here by hand (not computed by structlin).

A case is a form (with its options) and a geometry; every form, a user-registered one included
(``"gated-test"``, registered by :func:`registered_user_form`), meets several geometries, and every geometry (1-D,
2-D and 3-D; zeros, reflect, replicate and circular padding; strides, dilations, groups, ``"same"`` with an even
kernel; atrous quadratic terms with even and uneven extra padding) meets several forms.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import structlin
from structlin.costs import Cost
from structlin.layers.quadratic_forms import QUADRATIC_FORMS, PartSpec, QuadraticForm

IN, OUT, RANK = 4, 6, 2
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
LAYER = {1: structlin.QuadraticConv1d, 2: structlin.QuadraticConv2d, 3: structlin.QuadraticConv3d}
TORCH_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class Gated(QuadraticForm):
    """A user's form: ``y = a + M (a ⊙ b)`` with ``M`` reading the product on the output grid (a 1×1 convolution
    from ``out`` channels: an input of size ``"out"``, which the default ``on_input_grid`` puts there)."""

    name = "gated-test"
    inputs = {"x": "in", "a*b": "out"}
    parts = (
        PartSpec("a", "x", "out", True, first_order=True),
        PartSpec("b", "x", "out", True, start=1.0),
        PartSpec("m", "a*b", "out", True, start=0.0),
    )

    def combine(self, run, x):
        o = run("x", x)
        return o["a"] + run("a*b", o["a"] * o["b"])["m"]

    def elementwise_cost(self, rows, in_features, out_features, rank, itemsize):
        # forward: the product and the add; backward: the product's two factor gradients and the sum of the two
        # gradients of ``a`` (read by the product and the add); saved: both factors
        return Cost(0, 2 * rows * out_features, 3 * rows * out_features, 2 * rows * out_features * itemsize)


@contextlib.contextmanager
def registered_user_form():
    QUADRATIC_FORMS.register(Gated.name)(Gated)
    try:
        yield
    finally:
        QUADRATIC_FORMS.unregister(Gated.name)


# name → (dims, nn.Conv arguments, quadratic_dilation, the atrous parts' F.pad tuple (last dimension first),
#         an input's spatial size)
GEOMETRIES = {
    "1d-pad1": (1, dict(kernel_size=3, padding=1), None, None, (9,)),
    "1d-stride2-reflect-atrous": (1, dict(kernel_size=5, stride=2, padding=2, padding_mode="reflect"), 2, (4, 4),
                                  (11,)),
    "2d-same-dilated-groups-atrous": (2, dict(kernel_size=3, padding="same", dilation=2, groups=2), 3, (3, 3, 3, 3),
                                      (7, 8)),
    "2d-circular-uneven-atrous": (2, dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), padding_mode="circular"),
                                  (1, 2), (0, 1, 1, 1), (6, 5)),
    "2d-same-even-kernel": (2, dict(kernel_size=4, padding="same"), None, None, (6, 7)),
    "3d-replicate-atrous": (3, dict(kernel_size=2, padding=1, padding_mode="replicate"), 2, (1, 2, 1, 2, 1, 2),
                            (3, 4, 3)),
}

FORMS = {
    "xu": dict(form="xu"),
    "fan": dict(form="fan"),
    "lowrank": dict(form="lowrank", rank=RANK),
    "fan-nobias": dict(form="fan", bias=False),
    "xu-nobias": dict(form="xu", bias=False),
    "gated-test": dict(form="gated-test"),
}

PAIRS = [
    ("xu", "1d-pad1"), ("xu", "2d-same-dilated-groups-atrous"), ("xu", "3d-replicate-atrous"),
    ("fan", "1d-stride2-reflect-atrous"), ("fan", "2d-circular-uneven-atrous"),
    ("lowrank", "1d-pad1"), ("lowrank", "2d-same-dilated-groups-atrous"), ("lowrank", "2d-circular-uneven-atrous"),
    ("fan-nobias", "2d-same-even-kernel"), ("xu-nobias", "1d-stride2-reflect-atrous"),
    ("gated-test", "1d-pad1"), ("gated-test", "2d-circular-uneven-atrous"),
]
CASES = [pytest.param(form, geometry, id=f"{form}-{geometry}") for form, geometry in PAIRS]
#: one case per form for the slower checks (torch.compile, Hessians)
FEW = [pytest.param(form, geometry, id=f"{form}-{geometry}")
       for form, geometry in dict((f, g) for f, g in reversed(PAIRS)).items()]


def options(form: str, geometry: str) -> dict:
    dims, conv_args, quadratic_dilation, _, _ = GEOMETRIES[geometry]
    return {**conv_args, **FORMS[form], "quadratic_dilation": quadratic_dilation}


def build(form_key: str, geometry_key: str, seed: int = 0, **extra):
    """The case's layer (``extra`` overrides its options), built after ``torch.manual_seed(seed)``."""
    dims = GEOMETRIES[geometry_key][0]
    torch.manual_seed(seed)
    return LAYER[dims](IN, OUT, **{**options(form_key, geometry_key), **extra})


def perturb_(layer, seed: int = 1):
    """Every parameter moved off its start (zero weights, unit biases), so every term of the form shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype))
    return layer


def float64_layer(form_key: str, geometry_key: str, seed: int = 0, **extra):
    return perturb_(build(form_key, geometry_key, seed=seed, dtype=torch.float64, **extra))


def input_for(geometry: str, batch: int = 2, dtype=torch.float64, seed: int = 3, channels: int = IN):
    spatial = GEOMETRIES[geometry][4]
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *spatial, generator=generator, dtype=dtype)


def torch_conv(geometry: str, in_channels: int = IN, out_channels: int = OUT, **overrides) -> nn.Module:
    """The ``nn.Conv*`` of the geometry (what the first-order part must reproduce)."""
    dims, conv_args, _, _, _ = GEOMETRIES[geometry]
    return TORCH_CONV[dims](in_channels, out_channels, **{**conv_args, **overrides})


def _first_order(geometry, v, weight, bias):
    conv = torch_conv(geometry, v.shape[1], weight.shape[0], bias=bias is not None).to(v.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv(v)


def _atrous(geometry, v, weight, bias, groups):
    dims, conv_args, quadratic_dilation, pads, _ = GEOMETRIES[geometry]
    if quadratic_dilation is None:
        conv = torch_conv(geometry, v.shape[1], weight.shape[0], bias=bias is not None, groups=groups).to(v.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv(v)
    mode = conv_args.get("padding_mode", "zeros")
    padded = F.pad(v, pads, mode="constant" if mode == "zeros" else mode)
    return CONV[dims](padded, weight, bias, conv_args.get("stride", 1), 0, quadratic_dilation, groups)


def reference(layer, x: torch.Tensor, geometry: str) -> torch.Tensor:
    """The form's formula with each part computed by explicit convolutions of its weights (``part_dense``)."""
    groups = GEOMETRIES[geometry][1].get("groups", 1)

    def part(name, v):
        weight, bias = layer.part_dense(name)
        spec = {s.name: s for s in layer.form.parts}[name]
        if spec.input not in ("x", "x*x"):
            return CONV[v.dim() - 2](v, weight, bias)  # 1×1 on the output grid
        if spec.first_order:
            return _first_order(geometry, v, weight, bias)
        return _atrous(geometry, v, weight, bias, groups if spec.size == "out" else 1)

    name = layer.form.name
    if name == "xu":
        return part("a", x) * part("b", x) + part("c", x)
    if name == "fan":
        return part("r", x) * part("g", x) + part("b", x * x)
    if name == "lowrank":
        return part("w", x) + part("p", part("u", x) * part("v", x))
    if name == "gated-test":
        a = part("a", x)
        return a + part("m", a * part("b", x))
    raise AssertionError(f"no reference for form {name!r}")
