"""Named, registrable strategies that configure layers: initialization and depth."""

from .depth import DEPTHS, resolve_depth
from .fastfood_init import FASTFOOD_INITS, FastfoodInit, resolve_fastfood_init
from .init import ACDC_INITS, ACDCInit, resolve_acdc_init

__all__ = ["DEPTHS", "resolve_depth", "ACDC_INITS", "ACDCInit", "resolve_acdc_init", "FASTFOOD_INITS", "FastfoodInit", "resolve_fastfood_init"]
