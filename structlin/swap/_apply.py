"""``apply_plan``: rebuild the structure a swap recorded (:meth:`SwapResult.to_plan`) on a freshly built model."""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from ..layers.base import layer_class
from ..layers.conv_layers import conv_layer_class
from ._convs import CONV_BUILDS, build_conv_layer, conv_dims
from ._modules import count_parameters, find_linear_like, install
from ._plan import read_plans
from ._result import SwapResult, SwappedLayer
from ._swap import build_layer

__all__ = ["apply_plan"]


def _lookup(model: nn.Module, name: str, by_name: dict) -> Any:
    if name in by_name:
        return by_name[name]
    modules = dict(model.named_modules())
    if name in modules:
        raise ValueError(f"the plan replaces {name!r}, but in this model it is a {type(modules[name]).__name__}, "
                         "not a linear layer (nn.Linear or a registered linear-like type); was it swapped already?")
    close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.6)
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise ValueError(f"the plan replaces {name!r}, which this model does not have{hint}")


def apply_plan(model: nn.Module, plan: Any) -> SwapResult:
    """Replace ``model``'s linear layers (and convolutions) as ``plan`` says, so that the ``state_dict`` of the
    model the plan was made from loads into it and reproduces its outputs.

    Args:
        model: a model with the original (dense) layers under the plan's names, e.g. freshly built from the same
            config or loaded with ``from_pretrained``.
        plan: what :meth:`SwapResult.to_plan` returned, a path to a JSON file holding it, a :class:`SwapResult`,
            or a list of these (applied in order, e.g. one per ``swap`` call).

    Each layer is built as the swap built it (its kind's constructor, or its ``from_linear`` on the module now
    under that name) with the recorded options, on the module's device and dtype; its values are the fresh
    ones until you load the saved ``state_dict``. ``ValueError`` (naming the layer) when a name is missing, is
    not a linear layer of the recorded shape, or the rebuilt layer's tensors differ from the recorded ones.

    Returns:
        a :class:`SwapResult` with ``preserve="plan"`` (:func:`~structlin.unswap` undoes it).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"apply_plan expects an nn.Module, got {type(model).__name__}")
    entries = read_plans(plan)
    params_before = count_parameters(model)
    records = []
    for entry in entries:
        by_name = {name: c for c in find_linear_like(model, conv_dims(entry["kind"])) for name in c.names}
        candidates = [_lookup(model, name, by_name) for name in entry["names"]]
        candidate = candidates[0]
        first = entry["names"][0]
        if any(c.module is not candidate.module for c in candidates):
            raise ValueError(f"the plan replaces one layer registered as {entry['names']}, but in this model they "
                             "are different modules")
        shape = (entry["in_features"], entry["out_features"])
        found = candidate.adapter.features(candidate.module)
        if found != shape:
            raise ValueError(f"the plan replaces {first!r} as a {shape[0]}→{shape[1]} layer, but in this model it "
                             f"is {found[0]}→{found[1]}")
        conv = candidate.adapter.family == "conv"
        builds = set(CONV_BUILDS.values()) if conv else set(CONV_BUILDS)
        if entry["build"] not in builds:
            raise ValueError(f"the plan builds {first!r} with {entry['build']!r}, but in this model it is a "
                             f"{type(candidate.module).__name__}, which is built with one of {sorted(builds)}")
        if conv:
            cls = conv_layer_class(entry["kind"], candidate.adapter.dims)
            layer, options = build_conv_layer(cls, entry["kind"], entry["build"], candidate.module, entry["options"],
                                              first)
        else:
            cls, linear = layer_class(entry["kind"]), candidate.adapter.as_linear(candidate.module)
            layer, options = build_layer(cls, entry["kind"], entry["build"], linear, entry["options"], first)
        tensors = {key: list(t.shape) for key, t in layer.state_dict().items()}
        if tensors != entry["tensors"]:
            raise ValueError(f"rebuilding {first!r} as {entry['kind']!r} with options {entry['options']} gives the "
                             f"tensors {tensors}, but the plan records {entry['tensors']} (was it written by another "
                             "version of structlin or of the layer kind?)")
        records.append(SwappedLayer(
            names=list(entry["names"]), in_features=shape[0], out_features=shape[1], kind=entry["kind"],
            method="plan", relative_error=None, error_inputs="", params_before=sum(
                p.numel() for p in candidate.module.parameters()),
            params_after=sum(p.numel() for p in layer.parameters()), hooks_moved=install(
                model, candidate.names, candidate.module, layer),
            linear=candidate.module, layer=layer, replaces=entry["replaces"], build=entry["build"], options=options,
        ))
    kinds = sorted({r.kind for r in records})
    return SwapResult(layers=records, kind=", ".join(kinds), preserve="plan", dry_run=False,
                      params_before=params_before, params_after=count_parameters(model))
