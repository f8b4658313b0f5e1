"""Named, registrable strategies that configure layers (initialization and depth) and their training (per-kind
learning-rate rules)."""

from .depth import DEPTHS, resolve_depth
from .fastfood_init import FASTFOOD_INITS, FastfoodInit, resolve_fastfood_init
from .init import ACDC_INITS, ACDCInit, resolve_acdc_init
from .lr import LR_RULES, LRRule, resolve_lr_rule
from .quadratic_init import QUADRATIC_INITS, QuadraticInit, resolve_quadratic_init

__all__ = [
    "ACDC_INITS",
    "ACDCInit",
    "DEPTHS",
    "FASTFOOD_INITS",
    "FastfoodInit",
    "LR_RULES",
    "LRRule",
    "QUADRATIC_INITS",
    "QuadraticInit",
    "resolve_acdc_init",
    "resolve_depth",
    "resolve_fastfood_init",
    "resolve_lr_rule",
    "resolve_quadratic_init",
]
