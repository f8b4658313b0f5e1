"""Per-kind learning-rate rules: how much faster or slower than a dense layer each parameter of a structured layer
trains (read by :func:`structlin.param_groups`).

A rule is an object with ``scale(layer, name) -> float``: the multiplier of the base learning rate for the
parameter ``name`` (as in ``layer.named_parameters(recurse=False)``) of ``layer``. :data:`LR_RULES` maps each
layer kind to the class of its default rule (built with no arguments); a kind with no entry gets :class:`Flat`
(the base rate). Register your own with ``@LR_RULES.register("kind", overwrite=True)``.

The defaults follow the μP argument that Qiu et al. (2024, "Compute Better Spent") apply to structured
matrices. With Adam every entry of a parameter moves by about the learning rate per step, in a direction
correlated with the layer's input, so one step changes a factor's output by about ``lr · fan_in``: to move every
layer's features at the same pace a factor of fan-in ``f`` needs a rate ``∝ 1/f``. Relative to the dense layer
of the same shape (fan-in ``in_features``), whose rate the user tunes, a factor of fan-in ``f`` gets

    multiplier · (in_features / f) ** exponent

(:class:`FanIn`; ``exponent = 1`` is the μP limit, ``0`` the base rate). A diagonal (ACDC's ``A``, ``D``,
Fastfood's ``S``, ``G``, ``B``) has fan-in 1; biases keep the base rate.

The registered defaults are the best exponent of the sweep documented in ``docs/lm.md`` (``examples/lm_ffn.py
--sweep``: exponents 0, 0.5 and 1 per kind in the FFNs of a width-256 byte-level transformer, one seed):
``0.5`` for ACDC's and Fastfood's diagonals (16× the base rate in a 256-wide layer, 32× in a 1024-wide one) and
``0`` (the base rate) for Monarch's and LowRank's factors, whose larger rates trained worse there. Pass
``MonarchRule(exponent=…)`` (or any rule) to :func:`structlin.param_groups` to use another.
"""

from __future__ import annotations

from typing import Mapping, Union

from torch import nn

from ..registry import Registry
from ._common import Strategy

__all__ = ["LRRule", "Flat", "Constant", "FanIn", "MonarchRule", "LowRankRule", "ACDCRule", "FastfoodRule",
           "LR_RULES", "resolve_lr_rule", "rule_for"]


class LRRule(Strategy):
    """Base class: ``scale(layer, name)`` is the multiplier of the base learning rate for ``layer``'s own
    parameter ``name`` (1 by default)."""

    def scale(self, layer: nn.Module, name: str) -> float:
        return 1.0


LR_RULES: Registry[type] = Registry("learning-rate rule")


@LR_RULES.register("flat")
class Flat(LRRule):
    """Every parameter at the base rate (what :func:`structlin.param_groups` did before per-kind rules)."""


class Constant(LRRule):
    """Every parameter at ``multiplier`` times the base rate (what a plain number given as a rule means)."""

    def __init__(self, multiplier: float):
        if not multiplier > 0:
            raise ValueError(f"a learning-rate multiplier must be > 0, got {multiplier!r}")
        self.multiplier = float(multiplier)

    def scale(self, layer, name):
        return self.multiplier


class FanIn(LRRule):
    """μP-style: a factor of fan-in ``f`` trains at ``multiplier · (in_features / f) ** exponent`` times the base
    rate; parameters without a fan-in (biases) at the base rate. Subclasses say what the fan-ins are."""

    #: the defaults of a kind's rule (subclasses set theirs from the sweep)
    default_exponent: float = 1.0
    default_multiplier: float = 1.0

    def __init__(self, exponent: float | None = None, multiplier: float | None = None):
        exponent = self.default_exponent if exponent is None else exponent
        multiplier = self.default_multiplier if multiplier is None else multiplier
        if not multiplier > 0:
            raise ValueError(f"multiplier must be > 0, got {multiplier!r}")
        self.exponent = float(exponent)
        self.multiplier = float(multiplier)

    def fan_ins(self, layer: nn.Module) -> dict[str, int]:
        """``{parameter name: fan-in}`` of the layer's factors (parameters not listed keep the base rate)."""
        raise NotImplementedError

    def scale(self, layer, name):
        fan_in = self.fan_ins(layer).get(name)
        if fan_in is None:
            return 1.0
        return self.multiplier * (layer.in_features / fan_in) ** self.exponent


@LR_RULES.register("monarch")
class MonarchRule(FanIn):
    """:class:`~structlin.Monarch`: ``R``'s blocks have fan-in ``p = ⌈in/k⌉``, ``L``'s ``q`` (so ``R`` gets
    ``(k·p / p)^e ≈ k^e`` times the base rate; default ``e = 0``, the base rate)."""

    default_exponent = 0.0

    def fan_ins(self, layer):
        _, p, q, _ = layer.sizes
        return {"R": p, "L": q}


@LR_RULES.register("lowrank")
class LowRankRule(FanIn):
    """:class:`~structlin.LowRank`: ``V`` has the dense fan-in (base rate), ``U`` fan-in ``rank`` (default
    ``e = 0``, the base rate)."""

    default_exponent = 0.0

    def fan_ins(self, layer):
        return {"U": layer.rank, "V": layer.in_features}


@LR_RULES.register("acdc")
class ACDCRule(FanIn):
    """:class:`~structlin.ACDC`: the diagonals ``A`` and ``D`` (fan-in 1; default ``e = 0.5``: ``√in`` times the
    base rate). The biases (``bias``, and ``A_bias``, ``D_bias`` with ``diagonal_bias``) train at the base rate."""

    default_exponent = 0.5

    def fan_ins(self, layer):
        return {"A": 1, "D": 1}


@LR_RULES.register("fastfood")
class FastfoodRule(FanIn):
    """:class:`~structlin.Fastfood`: the learned diagonals among ``S``, ``G``, ``B`` (fan-in 1; default
    ``e = 0.5``: ``√in`` times the base rate)."""

    default_exponent = 0.5

    def fan_ins(self, layer):
        return {name: 1 for name in ("S", "G", "B") if isinstance(getattr(layer, name, None), nn.Parameter)}


RuleLike = Union[str, LRRule, float, int]


def resolve_lr_rule(value: RuleLike) -> LRRule:
    """A rule from a registered name (built with no arguments), a rule object, or a positive number
    (:class:`Constant`); a ``ValueError`` naming the valid forms otherwise."""
    if isinstance(value, str):
        return LR_RULES.get(value)()
    if isinstance(value, LRRule) or callable(getattr(value, "scale", None)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Constant(value)
    raise ValueError(f"a learning-rate rule must be a name in {LR_RULES.names()}, an object with "
                     f"scale(layer, name) or a positive number; got {value!r}")


def rule_for(kind: str, rules: RuleLike | Mapping[str, RuleLike] | None = None) -> LRRule:
    """The rule for layers of ``kind``: from ``rules`` when it names one for every kind (a name, object or
    number) or for this kind (a mapping), else the kind's registered default (:class:`Flat` if none)."""
    if rules is not None and not isinstance(rules, Mapping):
        return resolve_lr_rule(rules)
    if rules is not None and kind in rules:
        return resolve_lr_rule(rules[kind])
    return LR_RULES.get(kind)() if kind in LR_RULES else Flat()
