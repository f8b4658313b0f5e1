"""Structured layers, all :class:`StructuredLayer` subclasses registered by kind."""

from .acdc import ACDC
from .base import StructuredLayer, available_layers, register_layer
from .fastfood import Fastfood
from .random_features import RandomFeatures, random_features

__all__ = ["StructuredLayer", "available_layers", "register_layer", "ACDC", "Fastfood", "RandomFeatures", "random_features"]
