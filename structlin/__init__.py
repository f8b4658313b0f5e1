"""structlin: structured linear layers for PyTorch."""

from . import costs, strategies, transforms
from .costs import Cost
from .layers import ACDC, StructuredLayer, available_layers, register_layer
from .swap import SwapResult, swap, unswap

__version__ = "0.1.0.dev0"

__all__ = ["ACDC", "Cost", "StructuredLayer", "available_layers", "costs", "register_layer", "strategies", "transforms", "__version__", "swap", "unswap", "SwapResult"]
