"""Structured layers, all :class:`StructuredLayer` subclasses registered by kind."""

from .acdc import ACDC
from .base import StructuredLayer, available_layers, layer_class, register_layer, unregister_layer
from .fastfood import Fastfood
from .lowrank import LowRank
from .quadratic import Quadratic
from .random_features import RandomFeatures, random_features

__all__ = [
    "ACDC",
    "Fastfood",
    "LowRank",
    "Quadratic",
    "RandomFeatures",
    "StructuredLayer",
    "available_layers",
    "layer_class",
    "random_features",
    "register_layer",
    "unregister_layer",
]
