"""structlin: structured linear layers for PyTorch."""

from . import costs, transforms
from .costs import Cost

__version__ = "0.1.0.dev0"

__all__ = ["Cost", "costs", "transforms", "__version__"]
