"""Training helpers for models that contain structlin layers."""

from __future__ import annotations

from typing import Iterator, Mapping

from torch import nn

from .layers.base import StructuredLayer
from .strategies.lr import RuleLike, rule_for

__all__ = ["param_groups", "lr_scales"]


def _owned(module: nn.Module, owner: StructuredLayer | None, prefix: str = "") -> Iterator[tuple]:
    """``(owner, name, parameter)`` for every parameter below ``module``: ``owner`` is the innermost structured
    layer holding it (``None`` outside any) and ``name`` its name relative to that layer."""
    for name, parameter in module.named_parameters(recurse=False):
        yield owner, prefix + name, parameter
    for child_name, child in module.named_children():
        if isinstance(child, StructuredLayer):
            yield from _owned(child, child)
        else:
            yield from _owned(child, owner, f"{prefix}{child_name}.")


def lr_scales(model: nn.Module, *, quadratic_lr_scale: float = 0.1,
              rules: RuleLike | Mapping[str, RuleLike] | None = None) -> list[tuple[nn.Parameter, float]]:
    """``(parameter, multiplier of the base rate)`` for each trainable parameter of ``model``, once each, in
    ``model.parameters()`` order: the rule of the innermost structured layer holding it (see
    :mod:`structlin.strategies.lr`; 1 outside structured layers), times ``quadratic_lr_scale`` when a quadratic
    layer lists it in ``quadratic_parameters()``."""
    if not quadratic_lr_scale > 0:
        raise ValueError(f"quadratic_lr_scale must be > 0, got {quadratic_lr_scale!r}")
    quadratic: set[int] = set()
    for module in model.modules():
        listed = getattr(module, "quadratic_parameters", None)
        if callable(listed):
            quadratic.update(id(p) for p in listed())
    rule_of: dict[int, object] = {}
    scales: dict[int, tuple[nn.Parameter, float]] = {}
    for owner, name, parameter in _owned(model, model if isinstance(model, StructuredLayer) else None):
        if not parameter.requires_grad or id(parameter) in scales:
            continue
        scale = 1.0
        if owner is not None:
            rule = rule_of.setdefault(id(owner), rule_for(owner.kind, rules))
            scale = float(rule.scale(owner, name))
            if not scale > 0:
                raise ValueError(f"the learning-rate rule {rule!r} gave {scale!r} for {owner.kind} parameter "
                                 f"{name!r}; multipliers must be > 0")
        if id(parameter) in quadratic:
            scale *= quadratic_lr_scale
        scales[id(parameter)] = (parameter, scale)
    order = {id(p): i for i, p in enumerate(model.parameters())}
    return sorted(scales.values(), key=lambda entry: order.get(id(entry[0]), len(order)))


def param_groups(model: nn.Module, *, quadratic_lr_scale: float = 0.1, lr: float = 1e-3,
                 rules: RuleLike | Mapping[str, RuleLike] | None = None, **group_options) -> list[dict]:
    """Optimizer parameter groups that give each parameter of a structured layer its kind's learning rate.

    Each trainable parameter trains at ``lr`` times its multiplier (:func:`lr_scales`):

    * the learning-rate rule of the innermost structured layer holding it (the per-kind defaults of
      :data:`structlin.strategies.lr.LR_RULES`: ACDC's and Fastfood's diagonals at ``√in_features`` times
      ``lr``, Monarch's and LowRank's factors at ``lr``; ``docs/lm.md`` has the rules and the sweep behind
      them); parameters outside structured layers (``nn.Linear``, norms, embeddings) and biases at ``lr``;
    * times ``quadratic_lr_scale`` for the parameters every quadratic layer lists in ``quadratic_parameters()``
      (for :class:`~structlin.Quadratic` and the quadratic convolutions, all but the first-order part): the
      ReLinear remedy for unstable quadratic training.

    ``rules`` overrides the defaults: a mapping ``{kind: rule}`` for some kinds, or one rule for every kind; a rule
    is a registered name, an :class:`~structlin.strategies.lr.LRRule` object or a number (every parameter of the
    kind at that multiple). ``rules="flat"`` gives every structured parameter the base rate (only the quadratic
    scaling remains, as before per-kind rules).

    Parameters with the same multiplier share a group: the base-rate group first, the others in the order their
    first parameter appears in ``model.parameters()``. Each group sets its own ``lr`` (overriding the optimizer's
    ``lr`` argument: pass the base rate here) and records its multiplier as ``"lr_scale"``; ``group_options``
    (e.g. ``weight_decay``) go into every group. Parameters with ``requires_grad=False`` are left out; each
    parameter appears once.

    >>> optimizer = torch.optim.Adam(param_groups(model, lr=1e-3, quadratic_lr_scale=0.1))
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    grouped: dict[float, list[nn.Parameter]] = {1.0: []}
    for parameter, scale in lr_scales(model, quadratic_lr_scale=quadratic_lr_scale, rules=rules):
        grouped.setdefault(scale, []).append(parameter)
    return [{"params": params, "lr": lr * scale, "lr_scale": scale, **group_options}
            for scale, params in grouped.items() if params]
