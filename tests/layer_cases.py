"""The layer configurations every conformance test runs over: each registered kind with the option sets in
``OPTIONS`` (kinds not listed there with ``{}``). A newly registered kind is picked up without edits.

A configuration is a linear map when its class overrides ``to_dense`` (or as ``OPTIONS`` says).
"""

import pytest
import torch

import structlin
from structlin import StructuredLayer
from structlin.strategies.init import Authors

SHAPES = [(8, 8), (5, 12), (12, 5), (7, 7), (1, 1)]


def _rank(in_features, out_features):
    return max(1, min(in_features, out_features) // 2)


# kind -> [(options, linear)]; an option given as a function of (in_features, out_features) is computed per shape.
OPTIONS = {
    "acdc": [
        ({"depth": 3}, True),
        ({"depth": 2, "permute": False}, True),
        ({"depth": 2, "activation": "relu"}, False),
        # the authors' block: a bias after each diagonal (an affine layer), the riffle between blocks
        ({"depth": 2, "diagonal_bias": True, "permute": "riffle", "init": Authors(noise=0.01, signs=True)}, True),
        ({"depth": 2, "diagonal_bias": True, "activation": "relu", "bias": False}, False),
    ],
    "lowrank": [({"rank": _rank}, True)],
    # default nblocks (about √min(in, out)); and more blocks than hidden units per block (padding, q < k)
    "monarch": [({}, True), ({"nblocks": 3, "bias": False}, True)],
    "quadratic": [
        ({"form": "fan"}, False),
        ({"form": "xu"}, False),
        ({"form": "lowrank", "rank": _rank}, False),
        ({"form": "xu", "branch": "acdc", "depth": 2}, False),
        ({"form": "fan", "bias": False}, False),
    ],
}


def _cases():
    for kind in structlin.available_layers():
        for index, (options, linear) in enumerate(OPTIONS.get(kind, [({}, None)])):
            yield pytest.param(kind, options, linear, id=f"{kind}-{index}")


CASES = list(_cases())


def build(kind, options, in_features, out_features, seed=0, **extra):
    resolved = {k: (v(in_features, out_features) if callable(v) else v) for k, v in options.items()}
    torch.manual_seed(seed)
    return StructuredLayer.create(kind, in_features, out_features, **resolved, **extra)


def is_linear(layer, linear):
    if linear is not None:
        return linear
    return type(layer).to_dense is not StructuredLayer.to_dense


def perturb_(layer, seed=1):
    """Move every floating parameter and buffer off its init (zero biases, linear starts) so tests see all terms."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(layer.parameters()):
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            tensor.add_(0.1 * noise.to(tensor.dtype))
    return layer


def float64_layer(kind, options, shape, seed=0):
    return perturb_(build(kind, options, *shape, seed=seed, dtype=torch.float64))


def bias_of(layer):
    """The constant term of an affine layer: ``forward(x) == x @ to_dense().T + bias_of(layer)``."""
    return layer.dense_bias()
