"""The swap plan: a JSON-ready record of what a swap replaced, enough to rebuild the same structure.

A plan is ``{"format": "structlin-swap-plan", "version": 1, "layers": [entry, …]}``; each entry::

    {"names": ["transformer.h.0.mlp.c_fc"],            # every name the replaced module was registered under
     "replaces": "transformers.pytorch_utils.Conv1D",   # its type
     "in_features": 32, "out_features": 128,
     "kind": "acdc", "build": "constructor",            # or "from_linear"
     "options": {"depth": 2, "bias": true},             # what the layer was built with
     "tensors": {"A": [2, 128], "D": [2, 128], …}}      # the replacement's state_dict: key → shape

``build`` says how :func:`~structlin.apply_plan` builds the layer again: ``"constructor"`` calls
``StructuredLayer.create(kind, in_features, out_features, **options)``, ``"from_linear"`` calls the kind's
``from_linear`` on the module found under the name (a start from the fresh model's weights, overwritten when the
saved ``state_dict`` is loaded). For a convolution (``"replaces": "torch.nn.modules.conv.Conv2d"``, the features
being channels) ``"from_conv"`` calls the kind's convolutional class's ``from_conv`` on it, and ``"constructor"``
that class with the convolution's arguments (kernel, stride, padding, … are read from the fresh model's module).
``tensors`` lets it check that the rebuilt layer has the structure the weights were saved from.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

__all__ = ["FORMAT", "VERSION", "PLAN_FILE", "plan_entry", "make_plan", "read_plans"]

FORMAT = "structlin-swap-plan"
VERSION = 1
#: the file name the save/reload recipe uses next to a saved model
PLAN_FILE = "structlin_plan.json"
_KEYS = ("names", "replaces", "in_features", "out_features", "kind", "build", "options", "tensors")
BUILDS = ("constructor", "from_linear", "from_conv")


def _json_ready(value: Any, where: str) -> Any:
    """``value`` as JSON would give it back (tuples become lists); ``TypeError`` naming ``where`` otherwise."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where} cannot be written to a JSON plan ({error}); pass options by name or number "
                        "(e.g. activation='relu', init='paper') to swap a layer you want to save a plan of") from None


def plan_entry(*, names: list[str], replaces: str, in_features: int, out_features: int, kind: str, build: str,
               options: dict, layer) -> dict:
    """One entry of a plan, for the replacement ``layer`` (``TypeError`` for an option JSON cannot hold)."""
    ready = {key: _json_ready(value, f"option {key}={value!r} of {names[0]!r}") for key, value in options.items()}
    tensors = {key: list(t.shape) for key, t in layer.state_dict().items()}
    return {"names": list(names), "replaces": replaces, "in_features": in_features, "out_features": out_features,
            "kind": kind, "build": build, "options": ready, "tensors": tensors}


def make_plan(entries: list[dict]) -> dict:
    return {"format": FORMAT, "version": VERSION, "layers": entries}


def _check(plan: Any, source: str) -> list[dict]:
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise ValueError(f"{source} is not a structlin swap plan (expected a dict with format={FORMAT!r})")
    if plan.get("version") != VERSION:
        raise ValueError(f"{source} is a version {plan.get('version')!r} plan; this structlin reads version {VERSION}")
    layers = plan.get("layers")
    if not isinstance(layers, list):
        raise ValueError(f"{source}: 'layers' must be a list")
    for i, entry in enumerate(layers):
        missing = [key for key in _KEYS if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise ValueError(f"{source}: layer entry {i} lacks {missing}")
        if entry["build"] not in BUILDS:
            raise ValueError(f"{source}: layer entry {i} has build={entry['build']!r}; expected one of {BUILDS}")
    return layers


def read_plans(plan: Any, source: str = "the plan") -> list[dict]:
    """The entries of ``plan``: a plan dict, a path to a JSON file holding a plan (or a list of plans), an object
    with ``to_plan()``, or a list of these (entries in order)."""
    if isinstance(plan, (str, os.PathLike)):
        with open(plan, encoding="utf-8") as file:
            return read_plans(json.load(file), f"plan file {os.fspath(plan)!r}")
    if hasattr(plan, "to_plan"):
        return _check(plan.to_plan(), "the result's plan")
    if isinstance(plan, dict):
        return _check(plan, source)
    if isinstance(plan, Iterable):
        return [entry for part in plan for entry in read_plans(part, source)]
    raise TypeError(f"a plan is a dict, a path to a JSON plan file, a SwapResult or a list of these, got "
                    f"{type(plan).__name__}")
