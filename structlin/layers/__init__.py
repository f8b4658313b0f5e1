"""Structured layers, all :class:`StructuredLayer` subclasses registered by kind."""

from .acdc import ACDC
from .base import StructuredLayer, available_layers, register_layer
from .lowrank import LowRank
from .quadratic import Quadratic

__all__ = ["StructuredLayer", "available_layers", "register_layer", "ACDC", "LowRank", "Quadratic"]
