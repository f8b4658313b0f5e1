"""Structured layers: the `StructuredLayer` kinds, registered by name, and the quadratic convolutions (the
"quadratic" kind's replacements of `nn.Conv1d`/`nn.Conv2d`/`nn.Conv3d`, registered with `register_conv_layer`)."""

from .acdc import ACDC
from .base import StructuredLayer, available_layers, layer_class, register_layer, unregister_layer
from .conv_layers import conv_layer_class, conv_layer_kinds, register_conv_layer
from .fastfood import Fastfood
from .lowrank import LowRank
from .monarch import Monarch
from .quadratic import Quadratic
from .quadratic_conv import QuadraticConv1d, QuadraticConv2d, QuadraticConv3d, QuadraticConvNd
from .random_features import RandomFeatures, random_features

__all__ = [
    "ACDC",
    "Fastfood",
    "LowRank",
    "Monarch",
    "Quadratic",
    "QuadraticConv1d",
    "QuadraticConv2d",
    "QuadraticConv3d",
    "QuadraticConvNd",
    "RandomFeatures",
    "StructuredLayer",
    "available_layers",
    "conv_layer_class",
    "conv_layer_kinds",
    "layer_class",
    "random_features",
    "register_conv_layer",
    "register_layer",
    "unregister_layer",
]
