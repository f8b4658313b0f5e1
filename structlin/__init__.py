"""structlin: structured linear layers for PyTorch."""

from . import costs, strategies, transforms
from .costs import Cost
from .layers import ACDC, Fastfood, RandomFeatures, StructuredLayer, available_layers, random_features, register_layer

__version__ = "0.1.0.dev0"

__all__ = ["ACDC", "Cost", "Fastfood", "StructuredLayer", "available_layers", "costs", "RandomFeatures", "random_features", "register_layer", "strategies", "transforms", "__version__"]
