"""Structured layers, all :class:`StructuredLayer` subclasses registered by kind."""

from .acdc import ACDC
from .base import StructuredLayer, available_layers, register_layer, unregister_layer
from .fastfood import Fastfood
from .random_features import RandomFeatures, random_features

__all__ = [
    "ACDC",
    "Fastfood",
    "RandomFeatures",
    "StructuredLayer",
    "available_layers",
    "random_features",
    "register_layer",
    "unregister_layer",
]
