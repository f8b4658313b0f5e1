"""structlin: structured linear layers for PyTorch."""

from . import costs, strategies, transforms
from .costs import Cost
from .layers import ACDC, LowRank, Quadratic, StructuredLayer, available_layers, register_layer
from .training import param_groups

__version__ = "0.1.0.dev0"

__all__ = ["ACDC", "Cost", "LowRank", "Quadratic", "param_groups", "StructuredLayer", "available_layers", "costs", "register_layer", "strategies", "transforms", "__version__"]
