"""Named, registrable strategies that configure layers: initialization and depth."""

from .depth import DEPTHS, resolve_depth
from .init import ACDC_INITS, ACDCInit, resolve_acdc_init
from .quadratic_init import QUADRATIC_INITS, QuadraticInit, resolve_quadratic_init

__all__ = ["DEPTHS", "resolve_depth", "ACDC_INITS", "ACDCInit", "resolve_acdc_init", "QUADRATIC_INITS", "QuadraticInit",
           "resolve_quadratic_init"]
