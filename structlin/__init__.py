"""structlin: structured linear layers for PyTorch."""

from . import costs, prune, strategies, transforms
from .costs import Cost
from .layers import (
    ACDC,
    Fastfood,
    LowRank,
    Monarch,
    Quadratic,
    QuadraticConv1d,
    QuadraticConv2d,
    QuadraticConv3d,
    RandomFeatures,
    StructuredLayer,
    available_layers,
    random_features,
    register_layer,
    unregister_layer,
)
from .prune import ShrinkResult
from .report import Report, report
from .swap import SwapResult, apply_plan, register_linear_adapter, swap, unregister_linear_adapter, unswap
from .training import param_groups

__version__ = "0.1.0.dev0"

__all__ = [
    "ACDC",
    "Cost",
    "Fastfood",
    "LowRank",
    "Monarch",
    "Quadratic",
    "QuadraticConv1d",
    "QuadraticConv2d",
    "QuadraticConv3d",
    "RandomFeatures",
    "Report",
    "ShrinkResult",
    "StructuredLayer",
    "SwapResult",
    "apply_plan",
    "available_layers",
    "costs",
    "param_groups",
    "prune",
    "random_features",
    "register_layer",
    "register_linear_adapter",
    "report",
    "strategies",
    "swap",
    "transforms",
    "unregister_layer",
    "unregister_linear_adapter",
    "unswap",
    "__version__",
]
