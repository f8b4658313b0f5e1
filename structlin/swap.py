"""Replace the ``nn.Linear`` layers of any model by a registered structured kind, and undo it.

How a replacement starts (``preserve``), by what the kind declares (see :class:`~structlin.StructuredLayer`):

============================  ==============================  =====================================  ===========
kind declares                 ``"auto"`` (default)            ``"fit"``                              ``"none"``
============================  ==============================  =====================================  ===========
``exact_from_linear = True``  ``from_linear`` (exact)         ``from_linear`` (exact)                fresh init
overrides ``from_linear``     fresh init                      ``from_linear`` (its closed-form fit), fresh init
                                                              then refined on ``calibration`` if any
neither                       fresh init                      fresh init, fitted by least squares    fresh init
                                                              (:func:`structlin.fitting.fit_layer`)
============================  ==============================  =====================================  ===========

So a kind says "I have a closed-form fit" by overriding the classmethod ``from_linear`` (for example a truncated
SVD), and "that fit is exact for every matrix" by also setting ``exact_from_linear = True``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .fitting import fit_layer, relative_error
from .layers.base import StructuredLayer, available_layers, layer_class

__all__ = ["swap", "unswap", "SwapResult", "SwappedLayer"]

PRESERVE = ("auto", "fit", "none")

# the per-module hook dictionaries a replacement takes over from the Linear it replaces
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
)


@dataclass
class SwappedLayer:
    """One replaced ``nn.Linear`` (or, in a dry run, one that would be).

    Attributes:
        names: every qualified name under which the Linear was registered (one unless it is shared).
        in_features, out_features: its shape.
        kind: the layer kind it was (or would be) replaced by.
        method: how the replacement started: ``"exact"`` (``from_linear``, exact), ``"closed-form"``
            (``from_linear``, approximate), ``"closed-form+fit"``, ``"fit"`` (least squares on the matrix),
            ``"fit-calibration"`` (least squares on the calibration inputs), or ``"init"`` (fresh init).
        relative_error: ``‖new(X) − old(X)‖ / ‖old(X)‖`` right after the swap, on the inputs the Linear saw in the
            calibration batch, or on standard normal inputs without one; ``None`` in a dry run.
        error_inputs: ``"calibration"`` or ``"random"``: which inputs ``relative_error`` was measured on.
        params_before, params_after: parameter counts of the Linear and of its replacement.
        hooks_moved: number of hooks moved from the Linear to its replacement.
        linear: the original module (with its weights as they were), kept for :func:`unswap`.
        layer: the replacement (``None`` in a dry run).
    """

    names: list[str]
    in_features: int
    out_features: int
    kind: str
    method: str
    relative_error: float | None
    error_inputs: str
    params_before: int
    params_after: int
    hooks_moved: int
    linear: nn.Linear = field(repr=False)
    layer: nn.Module | None = field(repr=False)

    @property
    def name(self) -> str:
        return self.names[0]


@dataclass
class SwapResult:
    """What :func:`swap` did (or, with ``dry_run=True``, would do). ``str(result)`` is a table.

    Attributes:
        layers: one :class:`SwappedLayer` per replaced Linear, in module order.
        kind, preserve, dry_run: the call's arguments.
        params_before, params_after: parameters of the whole model before and after (after = before in a dry run
            plus the change the swap would make).
    """

    layers: list[SwappedLayer]
    kind: str
    preserve: str
    dry_run: bool
    params_before: int
    params_after: int

    @property
    def names(self) -> list[str]:
        """The qualified names replaced (all names of a shared Linear)."""
        return [name for entry in self.layers for name in entry.names]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the modules)."""
        keep = ("names", "in_features", "out_features", "kind", "method", "relative_error", "error_inputs",
                "params_before", "params_after", "hooks_moved")
        return {
            "kind": self.kind,
            "preserve": self.preserve,
            "dry_run": self.dry_run,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "layers": [{k: getattr(entry, k) for k in keep} for entry in self.layers],
        }

    def __str__(self) -> str:
        head = ("layer", "shape", "kind", "start", "rel. error", "params before", "params after")
        rows = [
            (
                ", ".join(e.names),
                f"{e.in_features}→{e.out_features}",
                e.kind,
                e.method,
                "–" if e.relative_error is None else f"{e.relative_error:.2e} ({e.error_inputs})",
                f"{e.params_before:,}",
                f"{e.params_after:,}",
            )
            for e in self.layers
        ]
        rows.append(("model", "", "", "", "", f"{self.params_before:,}", f"{self.params_after:,}"))
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        align = ["<", "<", "<", "<", ">", ">", ">"]
        lines = [("dry run: " if self.dry_run else "") + f"{len(self.layers)} nn.Linear → {self.kind!r} "
                 f"(preserve={self.preserve!r})"]
        for i, row in enumerate([head, *rows]):
            if i == 1 or i == len(rows):
                lines.append("  ".join("-" * w for w in widths))
            lines.append("  ".join(f"{str(c):{a}{w}}" for c, a, w in zip(row, align, widths)).rstrip())
        return "\n".join(lines)


def _patterns(value: str | Sequence[str] | None, what: str) -> list[str] | None:
    if value is None:
        return None
    patterns = [value] if isinstance(value, str) else list(value)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise TypeError(f"{what} must be a glob pattern or a non-empty list of them, got {value!r}")
    return patterns


def _check_patterns(patterns: list[str] | None, what: str, names: list[str]) -> None:
    if patterns is None:
        return
    unmatched = [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]
    if unmatched:
        listing = ", ".join(names) if names else "(the model has none)"
        raise ValueError(
            f"{what} pattern(s) {unmatched} match no nn.Linear; patterns are globs on the whole qualified name "
            f"(e.g. '*.fc1', 'blocks.*.attn.*'). The model's nn.Linear names: {listing}"
        )


def _linear_locations(model: nn.Module) -> dict[int, tuple[nn.Linear, list[str]]]:
    """Every plain ``nn.Linear`` below ``model`` (subclasses excluded), with all the names it is registered under."""
    found: dict[int, tuple[nn.Linear, list[str]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if type(module) is nn.Linear and name:
            found.setdefault(id(module), (module, []))[1].append(name)
    return found


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, attr = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), attr


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _move_hooks(source: nn.Module, target: nn.Module) -> int:
    """Give ``target`` the hook dictionaries of ``source`` (the same objects, so existing handles still work)."""
    moved = 0
    for attr in _HOOK_DICTS:
        hooks, own = getattr(source, attr), getattr(target, attr)
        if not hooks:
            continue
        if own:
            raise RuntimeError(f"cannot move {attr} to a {type(target).__name__} that already has its own")
        setattr(target, attr, hooks)
        setattr(source, attr, own)
        if attr in ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks"):
            moved += len(hooks)
    if source._backward_hooks or target._backward_hooks:
        target._is_full_backward_hook, source._is_full_backward_hook = source._is_full_backward_hook, None
    return moved


def _has_own_from_linear(cls: type) -> bool:
    return cls.from_linear.__func__ is not StructuredLayer.from_linear.__func__


def _method(cls: type, preserve: str, calibrated: bool) -> str:
    if preserve == "none":
        return "init"
    if cls.exact_from_linear:
        return "exact"
    if preserve == "auto":
        return "init"
    if _has_own_from_linear(cls):
        return "closed-form+fit" if calibrated else "closed-form"
    return "fit-calibration" if calibrated else "fit"


def _build(cls: type, kind: str, linear: nn.Linear, method: str, options: dict, name: str) -> nn.Module:
    try:
        if method in ("exact", "closed-form", "closed-form+fit"):
            layer = cls.from_linear(linear, **options)
        else:
            options = {"bias": linear.bias is not None, **options}
            layer = StructuredLayer.create(kind, linear.in_features, linear.out_features, **options)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"could not build a {kind!r} layer for {name!r} ({linear.in_features}→{linear.out_features}) with "
            f"options {options}: {error}"
        ) from error
    return layer.to(device=linear.weight.device, dtype=linear.weight.dtype)


def _calibration_inputs(model: nn.Module, calibration: Any, linears: Iterable[nn.Linear]) -> dict[int, torch.Tensor]:
    """Run ``model`` on the calibration batch once and keep what each of ``linears`` received."""
    seen: dict[int, list[torch.Tensor]] = {}
    handles = [
        linear.register_forward_pre_hook(
            lambda module, args: seen.setdefault(id(module), []).append(args[0].detach().reshape(-1, module.in_features))
        )
        for linear in linears
    ]
    try:
        with torch.no_grad():
            if isinstance(calibration, dict):
                model(**calibration)
            elif isinstance(calibration, (tuple, list)):
                model(*calibration)
            else:
                model(calibration)
    finally:
        for handle in handles:
            handle.remove()
    return {key: torch.cat(chunks) for key, chunks in seen.items()}


def swap(
    model: nn.Module,
    kind: str,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    min_features: int = 0,
    preserve: str = "auto",
    calibration: Any = None,
    dry_run: bool = False,
    fit_iterations: int = 500,
    **layer_options,
) -> SwapResult:
    """Replace ``model``'s ``nn.Linear`` layers by layers of a registered ``kind``, in place.

    Args:
        model: any ``nn.Module``; it stays a normal module (``state_dict``, ``torch.compile``, ``torch.save``).
        kind: a registered layer kind (:func:`structlin.available_layers`).
        include: glob pattern(s) on the qualified module name (``fnmatch``, the whole name must match; ``*``
            also crosses dots): only these are replaced. ``None`` means every ``nn.Linear``.
        exclude: glob pattern(s) of names to leave alone. Every pattern of ``include`` and ``exclude`` must match
            at least one ``nn.Linear`` (a typo is an error that lists the names).
        min_features: replace only Linears whose smaller side ``min(in, out)`` is at least this.
        preserve: ``"auto"``, ``"fit"`` or ``"none"``: how each replacement starts (see the module docstring).
        calibration: a batch of model inputs (a tensor, a tuple/list of positional inputs, or a dict of keyword
            inputs). The model runs once on it before anything is replaced; each Linear's inputs are then the
            fitting data (``preserve="fit"``) and the data its error is reported on.
        dry_run: build nothing into the model: return what would be replaced (errors are not measured).
        fit_iterations: L-BFGS iterations of each least-squares fit (:func:`structlin.fitting.fit_layer`).
        **layer_options: passed to the kind's constructor (or ``from_linear``), e.g. ``rank=16`` or ``depth=4``.
            ``bias`` defaults to whether the Linear has one.

    Only modules whose type is exactly ``nn.Linear`` are replaced (a subclass such as the ``out_proj`` of
    ``nn.MultiheadAttention`` may be read directly by its parent). A Linear registered under several names is
    replaced by one layer in all of them. Each replacement has the Linear's device, dtype and training mode;
    if none of the Linear's parameters required grad, neither do the replacement's. Hooks on parents stay;
    the forward, forward-pre and backward hooks of a replaced Linear move to its replacement (they see the
    same inputs and outputs; a hook that reads ``module.weight`` will not find one).

    Returns:
        a :class:`SwapResult`; :func:`unswap` restores the original Linears.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"swap expects an nn.Module, got {type(model).__name__}")
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a registered layer kind name (one of {', '.join(available_layers())}), got {kind!r}")
    cls = layer_class(kind)
    if preserve not in PRESERVE:
        raise ValueError(f"preserve must be one of {', '.join(map(repr, PRESERVE))}, got {preserve!r}")
    for name, value, low in (("min_features", min_features, 0), ("fit_iterations", fit_iterations, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int ≥ {low}, got {value!r}")
    include_p, exclude_p = _patterns(include, "include"), _patterns(exclude, "exclude")
    if type(model) is nn.Linear:
        raise ValueError("swap replaces submodules in place; the model itself is an nn.Linear, so wrap it first")

    found = _linear_locations(model)
    all_names = [name for _, names in found.values() for name in names]
    _check_patterns(include_p, "include", all_names)
    _check_patterns(exclude_p, "exclude", all_names)

    def selected(linear: nn.Linear, names: list[str]) -> bool:
        if include_p is not None and not any(fnmatchcase(n, p) for n in names for p in include_p):
            return False
        if exclude_p is not None and any(fnmatchcase(n, p) for n in names for p in exclude_p):
            return False
        return min(linear.in_features, linear.out_features) >= min_features

    targets = [(linear, names) for linear, names in found.values() if selected(linear, names)]
    if not targets:
        warnings.warn(f"swap: no nn.Linear matched (include={include!r}, exclude={exclude!r}, "
                      f"min_features={min_features}); nothing replaced", stacklevel=2)
    calibrated = calibration is not None
    inputs = _calibration_inputs(model, calibration, [t[0] for t in targets]) if calibrated and targets else {}
    params_before = _count(model)

    records = []
    for linear, names in targets:
        method = _method(cls, preserve, calibrated)
        record = SwappedLayer(
            names=names, in_features=linear.in_features, out_features=linear.out_features, kind=kind, method=method,
            relative_error=None, error_inputs="calibration" if calibrated else "random",
            params_before=_count(linear), params_after=0, hooks_moved=0, linear=linear, layer=None,
        )
        if dry_run:
            with torch.random.fork_rng(devices=[]):
                record.params_after = _count(_build(cls, kind, linear, method, layer_options, names[0]))
            records.append(record)
            continue
        x = inputs.get(id(linear))
        if calibrated and x is None:
            raise ValueError(f"the calibration batch never reached {names[0]!r}, so it cannot be fitted on it")
        layer = _build(cls, kind, linear, method, layer_options, names[0])
        if method in ("fit", "fit-calibration", "closed-form+fit"):
            fit_layer(layer, linear, x, max_iter=fit_iterations)
        layer.train(linear.training)
        if not any(p.requires_grad for p in linear.parameters()):
            layer.requires_grad_(False)
        record.relative_error = relative_error(layer, linear, x)
        record.params_after = _count(layer)
        for name in names:
            parent, attr = _parent(model, name)
            setattr(parent, attr, layer)
        record.hooks_moved = _move_hooks(linear, layer)
        record.layer = layer
        records.append(record)

    change = sum(r.params_after - r.params_before for r in records)
    return SwapResult(
        layers=records, kind=kind, preserve=preserve, dry_run=dry_run,
        params_before=params_before, params_after=params_before + change,
    )


def unswap(model: nn.Module, result: SwapResult) -> nn.Module:
    """Put back the original ``nn.Linear`` layers that :func:`swap` replaced (with their original weights).

    The replacements' hooks move back with them. Raises ``ValueError`` for a dry-run result, and
    ``RuntimeError`` if a replaced position no longer holds the layer ``swap`` put there. Returns ``model``.
    """
    if not isinstance(result, SwapResult):
        raise TypeError(f"unswap expects the SwapResult returned by swap, got {type(result).__name__}")
    if result.dry_run:
        raise ValueError("this SwapResult is from a dry run: nothing was replaced, so there is nothing to undo")
    for record in result.layers:
        for name in record.names:
            parent, attr = _parent(model, name)
            if getattr(parent, attr, None) is not record.layer:
                raise RuntimeError(f"{name!r} no longer holds the layer swap put there; cannot unswap it")
    for record in result.layers:
        for name in record.names:
            parent, attr = _parent(model, name)
            setattr(parent, attr, record.linear)
        _move_hooks(record.layer, record.linear)
    return model
