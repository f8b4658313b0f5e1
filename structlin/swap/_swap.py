"""``swap``: replace a model's linear-like modules by a structured kind, in place; ``unswap``: put them back."""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..fitting import FitProgress, FitResult, check_stall, fit, relative_error
from ..layers.base import StructuredLayer, available_layers, layer_class
from ..layers.conv_layers import conv_layer_class
from ._adapters import conv_adapter, linear_adapter, type_name
from ._convs import CONV_BUILDS, build_conv_layer, choose_conv_start, conv_dims, conv_relative_error, gather_conv_inputs
from ._modules import (Candidate, count_parameters, find_linear_like, install, move_hooks, other_modules, parent_of,
                       shared_with)
from ._result import SwapResult, SwappedLayer
from ._select import check_patterns, parse_patterns, select
from ._starts import PRESERVE, Start, choose_start

__all__ = ["swap", "unswap", "TIED"]

#: what swap does with a matching module whose weights are shared with another module
TIED = ("skip", "untie")


def build_layer(cls: type, kind: str, build: str, linear: nn.Linear, options: dict, name: str
                ) -> tuple[StructuredLayer, dict]:
    """The replacement of ``linear`` (an ``nn.Linear`` or a stand-in) built by ``build`` (``"from_linear"`` or
    ``"constructor"``), on its device and dtype, and the options it was built with; errors from the kind name
    the layer, its shape and the options."""
    from_linear = build == "from_linear"
    used = dict(options) if from_linear else {"bias": linear.bias is not None, **options}
    try:
        if from_linear:
            layer = cls.from_linear(linear, **used)
        else:
            layer = StructuredLayer.create(kind, linear.in_features, linear.out_features, **used)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"could not build a {kind!r} layer for {name!r} ({linear.in_features}→{linear.out_features}) with "
            f"options {used}: {error}"
        ) from error
    return layer.to(device=linear.weight.device, dtype=linear.weight.dtype), used


def _calibration_inputs(model: nn.Module, calibration: Any, targets: Iterable[Candidate]) -> dict[int, torch.Tensor]:
    """Run ``model`` on the calibration batch once and keep what each target module received (rows of
    ``in_features`` for linear layers, whole inputs for convolutions)."""
    seen: dict[int, list[torch.Tensor]] = {}
    convs = {id(c.module) for c in targets if c.adapter.family == "conv"}

    def keep(candidate: Candidate):
        if id(candidate.module) in convs:
            return lambda module, args: seen.setdefault(id(module), []).append(args[0].detach())
        in_features = candidate.adapter.features(candidate.module)[0]
        return lambda module, args: seen.setdefault(id(module), []).append(args[0].detach().reshape(-1, in_features))

    handles = [c.module.register_forward_pre_hook(keep(c)) for c in targets]
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
    return {key: gather_conv_inputs(chunks) if key in convs else torch.cat(chunks) for key, chunks in seen.items()}


class _Replacement:
    """How one target is replaced: its start, how it is built (what a plan records), and its error measure."""

    def __init__(self, cls: type, kind: str, candidate: Candidate, options: dict, start: Start, preserve: str):
        self.module, self.name = candidate.module, candidate.names[0]
        if candidate.adapter.family == "conv":
            self.cls = conv_layer_class(kind, candidate.adapter.dims)
            self.start = choose_conv_start(self.cls, preserve)
            self.build = CONV_BUILDS[self.start.build]
            self.linear = None
        else:
            self.cls, self.start, self.build = cls, start, start.build
            self.linear = candidate.adapter.as_linear(candidate.module)
        self.kind, self.options = kind, options

    def make(self) -> tuple[nn.Module, dict]:
        if self.linear is None:
            return build_conv_layer(self.cls, self.kind, self.build, self.module, self.options, self.name)
        return build_layer(self.cls, self.kind, self.build, self.linear, self.options, self.name)

    def error(self, layer: nn.Module, x: torch.Tensor | None) -> float:
        if self.linear is None:
            return conv_relative_error(layer, self.module, x)
        return relative_error(layer, self.linear, x)


class _Fits:
    """The least-squares fits of one swap call: a shared time budget, progress to stderr and to a callback."""

    def __init__(self, count: int, *, budget: float | None, stall: float, iterations: int, verbose: bool,
                 callback: Callable[[str, FitProgress], None] | None):
        self.count, self.budget, self.stall, self.iterations = count, budget, stall, iterations
        self.verbose, self.callback = verbose, callback
        self.done, self.spent = 0, 0.0

    def _report(self, name: str, shape: str) -> Callable[[FitProgress], None] | None:
        index, count, verbose, callback = self.done + 1, self.count, self.verbose, self.callback
        if not verbose and callback is None:
            return None

        def report(progress: FitProgress) -> None:
            if verbose:
                end = f", stopped: {progress.stop}" if progress.stop else ""
                print(f"structlin.swap: fit {index}/{count} {name} ({shape}): iteration {progress.iteration}, "
                      f"error {progress.relative_error:.4f}, {progress.elapsed:.1f} s{end}", file=sys.stderr,
                      flush=True)
            if callback is not None:
                callback(name, progress)

        return report

    def run(self, layer: nn.Module, linear: nn.Linear, x: torch.Tensor | None, name: str) -> FitResult:
        """Fit ``layer`` to ``linear`` (on ``x`` if given) within an equal share of the budget left."""
        max_time = None if self.budget is None else max(self.budget - self.spent, 1e-3) / (self.count - self.done)
        report = self._report(name, f"{linear.in_features}→{linear.out_features}")
        result = fit(layer, linear, x, max_iter=self.iterations, stall=self.stall, max_time=max_time, callback=report)
        self.done += 1
        self.spent += result.seconds
        return result


def _check_arguments(model, kind, preserve, tied, min_features, fit_iterations, fit_budget, fit_stall) -> type:
    if not isinstance(model, nn.Module):
        raise TypeError(f"swap expects an nn.Module, got {type(model).__name__}")
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a registered layer kind name (one of {', '.join(available_layers())}), "
                        f"got {kind!r}")
    cls = layer_class(kind)
    if preserve not in PRESERVE:
        raise ValueError(f"preserve must be one of {', '.join(map(repr, PRESERVE))}, got {preserve!r}")
    if tied not in TIED:
        raise ValueError(f"tied must be one of {', '.join(map(repr, TIED))}, got {tied!r}")
    for name, value, low in (("min_features", min_features, 0), ("fit_iterations", fit_iterations, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int ≥ {low}, got {value!r}")
    if fit_budget is not None and (isinstance(fit_budget, bool) or not isinstance(fit_budget, (int, float))
                                   or not fit_budget > 0):
        raise ValueError(f"fit_budget must be a positive number of seconds or None, got {fit_budget!r}")
    check_stall(fit_stall, "fit_stall")
    conv = conv_adapter(model)
    if linear_adapter(model) is not None or (conv is not None and conv.dims in conv_dims(kind)):
        raise ValueError(f"swap replaces submodules in place; the model itself is a {type(model).__name__}, so wrap "
                         "it first (e.g. nn.Sequential(model))")
    return cls


def swap(
    model: nn.Module,
    kind: str,
    *,
    include: Any = None,
    exclude: Any = None,
    min_features: int = 0,
    preserve: str = "auto",
    calibration: Any = None,
    tied: str = "skip",
    dry_run: bool = False,
    fit_iterations: int = 500,
    fit_budget: float | None = None,
    fit_stall: float = 1e-2,
    verbose: bool = False,
    fit_callback: Callable[[str, FitProgress], None] | None = None,
    conv_options: dict | None = None,
    **layer_options,
) -> SwapResult:
    """Replace ``model``'s linear layers by layers of a registered ``kind``, in place.

    Linear layers are the modules whose exact type has a linear adapter: ``nn.Linear``, Hugging Face's ``Conv1D``,
    and any type registered with :func:`structlin.register_linear_adapter`. A kind with convolutional layers
    (``"quadratic"``: :class:`~structlin.QuadraticConv2d` and its 1-D and 3-D siblings) also replaces
    ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` (exactly these types), with the same rules (patterns,
    ``min_features`` on the channels, tied weights), by its ``from_conv`` (exact) or, with ``preserve="none"``,
    its constructor. ``layer_options`` go to both (``form``, ``rank``), ``conv_options`` to convolutions only.

    Args:
        model: any ``nn.Module``; it stays a normal module (``state_dict``, ``torch.compile``, ``torch.save``).
        kind: a registered layer kind (:func:`structlin.available_layers`).
        include: which layers to replace (``None``: all). A name pattern, a list of them, or a dict from pattern to
            the layer options for the layers it matches (``{"c_fc": {"depth": 4}, "c_proj": {"depth": 2}}``).
            A pattern is a plain name (the layer's qualified name or its ending after a dot: ``"fc1"``,
            ``"mlp.c_fc"``), a glob on the whole name (``"blocks.*.mlp.*"``; ``*`` crosses dots), or a regular
            expression on the whole name (``"re:layer\\.\\d+\\.output\\.dense"`` or a compiled ``re.Pattern``).
        exclude: patterns of layers to leave alone. Every pattern of ``include`` and ``exclude`` must match at
            least one linear layer (a typo is an error that lists close names).
        min_features: replace only layers whose smaller side ``min(in, out)`` is at least this.
        preserve: ``"auto"``, ``"fit"`` or ``"none"``: how each replacement starts. ``"auto"`` uses the kind's
            exact or closed-form ``from_linear`` where it has one and a random init otherwise; ``"fit"`` also fits
            the kinds without one by least squares; ``"none"`` is a random init for all.
        calibration: a batch of model inputs (a tensor, a tuple/list of positional inputs, or a dict of keyword
            inputs). The model runs once on it before anything is replaced; each layer's inputs are then the
            fitting data (``preserve="fit"``) and the data its error is reported on.
        tied: ``"skip"`` (default) leaves alone, with a warning, a layer whose parameters are shared with another
            module (an output head tied to the token embedding); ``"untie"`` replaces it, and the other module
            keeps the shared tensor.
        dry_run: build nothing into the model: return what would be replaced (errors are not measured).
        fit_iterations: L-BFGS iterations of each least-squares fit at most (:func:`structlin.fitting.fit`).
        fit_budget: seconds for all the fits of this call together (``None``: no limit); each fit gets an equal
            share of what is left. A fit that runs out of time stops where it is (``stop="time"``).
        fit_stall: a fit stops when 30 iterations lower its relative error by less than this fraction of it.
        verbose: print each fit's progress (every 10 iterations) to stderr.
        fit_callback: called as ``fit_callback(name, progress)`` with a :class:`~structlin.fitting.FitProgress`
            every 10 iterations of each fit.
        conv_options: options for the convolutions only, over ``layer_options`` (e.g.
            ``{"quadratic_dilation": 2}``: the atrous quadratic term). A linear-only option (``branch="acdc"``) with
            a model that has convolutions needs ``exclude`` (or ``include``) to leave them out.
        **layer_options: passed to the kind's constructor (or ``from_linear``), e.g. ``rank=16`` or ``depth=4``;
            ``bias`` defaults to whether the layer has one. Per-pattern options of ``include`` override these.

    A layer registered under several names is replaced by one layer in all of them. Parts of structured layers
    are never replaced. Each replacement has the original's device, dtype and training mode; if none of the
    original's parameters required grad, neither do the replacement's. Hooks on parents stay; the forward,
    forward-pre and backward hooks of a replaced layer move to its replacement (they see the same inputs and
    outputs; a hook that reads ``module.weight`` will not find one).

    Returns:
        a :class:`SwapResult`: ``print`` it for a table; :func:`unswap` restores the original layers;
        ``to_plan()`` records the new structure for :func:`structlin.apply_plan`.
    """
    cls = _check_arguments(model, kind, preserve, tied, min_features, fit_iterations, fit_budget, fit_stall)
    if conv_options is not None and not isinstance(conv_options, dict):
        raise TypeError(f"conv_options must be a dict of layer options or None, got {conv_options!r}")
    include_p = parse_patterns(include, "include", with_options=True)
    exclude_p = parse_patterns(exclude, "exclude", with_options=False)

    candidates = find_linear_like(model, conv_dims(kind))
    all_names = [name for c in candidates for name in c.names]
    others = other_modules(model, candidates) if include_p or exclude_p else {}
    check_patterns(include_p, "include", all_names, others)
    check_patterns(exclude_p, "exclude", all_names, others)

    targets: list[tuple[Candidate, dict, list[str]]] = []
    skipped: dict[str, list[str]] = {}
    for candidate, options in zip(candidates, select([c.names for c in candidates], include_p, exclude_p)):
        if options is None:
            continue
        in_features, out_features = candidate.adapter.features(candidate.module)
        if min(in_features, out_features) < min_features:
            continue
        shared = shared_with(model, candidate)
        if shared and tied == "skip":
            skipped[candidate.names[0]] = shared
            continue
        family = {**layer_options, **(conv_options or {})} if candidate.adapter.family == "conv" else layer_options
        targets.append((candidate, {**family, **options}, shared))
    if skipped:
        listing = "; ".join(f"{name} (shares {', '.join(shared)})" for name, shared in skipped.items())
        warnings.warn(f"swap: left alone {len(skipped)} layer(s) whose weights are tied to other modules: {listing}. "
                      "Pass tied='untie' to replace them (the other modules keep the shared weights).", stacklevel=2)
    elif not targets:
        warnings.warn(f"swap: no linear layer matched (include={include!r}, exclude={exclude!r}, "
                      f"min_features={min_features}); nothing replaced", stacklevel=2)

    calibrated = calibration is not None
    inputs = _calibration_inputs(model, calibration, [t[0] for t in targets]) if calibrated and targets else {}
    params_before = count_parameters(model)
    start = choose_start(cls, preserve, calibrated)
    replacements = [_Replacement(cls, kind, candidate, options, start, preserve) for candidate, options, _ in targets]
    fits = _Fits(sum(r.start.fits for r in replacements), budget=fit_budget, stall=fit_stall,
                 iterations=fit_iterations, verbose=verbose, callback=fit_callback)

    records = []
    for (candidate, options, shared), replacement in zip(targets, replacements):
        module, names = candidate.module, candidate.names
        in_features, out_features = candidate.adapter.features(module)
        record = SwappedLayer(
            names=names, in_features=in_features, out_features=out_features, kind=kind,
            method=replacement.start.method, relative_error=None,
            error_inputs="calibration" if calibrated else "random",
            params_before=sum(p.numel() for p in module.parameters()), params_after=0, hooks_moved=0,
            linear=module, layer=None, replaces=type_name(type(module)), build=replacement.build,
            tied_to=list(shared),
        )
        records.append(record)
        if dry_run:  # built off the model to count it, without touching torch's RNG
            with torch.random.fork_rng(devices=[]):
                layer, record.options = replacement.make()
            record.params_after = sum(p.numel() for p in layer.parameters())
            continue
        x = inputs.get(id(module))
        if calibrated and x is None:
            raise ValueError(f"the calibration batch never reached {names[0]!r}, so it cannot be fitted on it")
        layer, record.options = replacement.make()
        if replacement.start.fits:
            record.fit = fits.run(layer, replacement.linear, x, names[0])
        record.relative_error = replacement.error(layer, x)
        record.params_after = sum(p.numel() for p in layer.parameters())
        record.hooks_moved = install(model, names, module, layer)
        record.layer = layer

    if dry_run:
        kept = count_parameters(model, leave_out=[name for r in records for name in r.names])
        params_after = kept + sum(r.params_after for r in records)
    else:
        params_after = count_parameters(model)
    timed_out = [r.name for r in records if r.fit is not None and r.fit.stop == "time"]
    if timed_out:
        warnings.warn(f"swap: fit_budget={fit_budget} s cut the fits of {', '.join(timed_out)} short; see the "
                      "result's errors", stacklevel=2)
    return SwapResult(layers=records, kind=kind, preserve=preserve, dry_run=dry_run, params_before=params_before,
                      params_after=params_after, skipped_tied=skipped)


def unswap(model: nn.Module, result: SwapResult) -> nn.Module:
    """Put back the original layers that :func:`swap` (or :func:`~structlin.apply_plan`) replaced, with the
    weights they had.

    The replacements' hooks move back with them. Raises ``ValueError`` for a dry-run result, and
    ``RuntimeError`` if a replaced position no longer holds the layer put there. Returns ``model``.
    """
    if not isinstance(result, SwapResult):
        raise TypeError(f"unswap expects the SwapResult returned by swap, got {type(result).__name__}")
    if result.dry_run:
        raise ValueError("this SwapResult is from a dry run: nothing was replaced, so there is nothing to undo")
    for record in result.layers:
        for name in record.names:
            parent, attr = parent_of(model, name)
            if getattr(parent, attr, None) is not record.layer:
                raise RuntimeError(f"{name!r} no longer holds the layer swap put there; cannot unswap it")
    for record in result.layers:
        for name in record.names:
            parent, attr = parent_of(model, name)
            setattr(parent, attr, record.linear)
        move_hooks(record.layer, record.linear)
    return model
