"""What a swap did: one :class:`SwappedLayer` per replaced module, gathered in a :class:`SwapResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..fitting import FitResult
from ._plan import make_plan, plan_entry
from ._starts import STARTS

__all__ = ["SwappedLayer", "SwapResult"]

ERROR_INPUTS = {"calibration": "calibration", "random": "random inputs"}


@dataclass
class SwappedLayer:
    """One replaced linear-like module (or, in a dry run, one that would be).

    Attributes:
        names: every qualified name under which the module was registered (one unless it is shared).
        in_features, out_features: its shape.
        kind: the layer kind it was (or would be) replaced by.
        method: how the replacement started: ``"exact"`` (``from_linear`` or ``from_conv``, exact), ``"closed-form"``
            (``from_linear``, approximate), ``"closed-form+fit"``, ``"fit"`` (least squares on the weights),
            ``"fit-calibration"`` (least squares on the calibration inputs), ``"init"`` (random init), or
            ``"plan"`` (built by :func:`~structlin.apply_plan`, its values to come from a ``state_dict``).
            :attr:`start` says the same in words.
        relative_error: ``‖new(X) − old(X)‖ / ‖old(X)‖`` right after the swap, on the inputs the module saw in the
            calibration batch, or on standard normal inputs without one; ``None`` in a dry run or a plan.
        error_inputs: ``"calibration"`` or ``"random"``: which inputs ``relative_error`` was measured on.
        params_before, params_after: parameter counts of the module and of its replacement.
        hooks_moved: number of hooks moved from the module to its replacement.
        linear: the original module (with its weights as they were; a convolution for a conv swap), kept for
            :func:`~structlin.unswap`.
        layer: the replacement (``None`` in a dry run).
        replaces: the original module's type, ``"module.ClassName"``.
        build: how the replacement was built, ``"constructor"``, ``"from_linear"`` or (convolutions)
            ``"from_conv"`` (what a plan records).
        options: the options the replacement was built with (``from_linear``'s or the constructor's).
        fit: what the least-squares fit did (a :class:`~structlin.fitting.FitResult`), or ``None`` without one.
        tied_to: names of parameters outside the module that shared its weights (it was untied), else empty.
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
    linear: nn.Module = field(repr=False)
    layer: nn.Module | None = field(repr=False)
    replaces: str = "torch.nn.modules.linear.Linear"
    build: str = "constructor"
    options: dict = field(default_factory=dict)
    fit: FitResult | None = None
    tied_to: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def start(self) -> str:
        """How the replacement started, in words: ``"exact"``, ``"closed-form"``, ``"fitted to weights"``, …"""
        return STARTS[self.method].label

    def plan_entry(self) -> dict:
        """This layer's entry of :meth:`SwapResult.to_plan`."""
        if self.layer is None:
            raise ValueError(f"{self.name!r} was not replaced (dry run): there is no structure to plan")
        return plan_entry(names=self.names, replaces=self.replaces, in_features=self.in_features,
                          out_features=self.out_features, kind=self.kind, build=self.build, options=self.options,
                          layer=self.layer)


@dataclass
class SwapResult:
    """What :func:`~structlin.swap` did (or, with ``dry_run=True``, would do). ``str(result)`` is a table.

    Attributes:
        layers: one :class:`SwappedLayer` per replaced module, in module order.
        kind, preserve, dry_run: the call's arguments (``preserve="plan"`` for :func:`~structlin.apply_plan`).
        params_before, params_after: parameters of the whole model before and after (after = before in a dry run
            plus the change the swap would make), each tensor counted once as ``model.parameters()`` yields them:
            a replaced module whose weight is shared with another module removes nothing that the other keeps.
        skipped_tied: name → names of the parameters it shares, for the matching modules left alone because their
            weights are tied to another module's (``tied="skip"``).
    """

    layers: list[SwappedLayer]
    kind: str
    preserve: str
    dry_run: bool
    params_before: int
    params_after: int
    skipped_tied: dict[str, list[str]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The qualified names replaced (all names of a shared module)."""
        return [name for entry in self.layers for name in entry.names]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the modules)."""
        keep = ("names", "in_features", "out_features", "kind", "method", "start", "relative_error", "error_inputs",
                "params_before", "params_after", "hooks_moved", "replaces", "tied_to")
        layers = []
        for entry in self.layers:
            row = {k: getattr(entry, k) for k in keep}
            row["fit"] = None if entry.fit is None else entry.fit.to_dict()
            layers.append(row)
        return {
            "kind": self.kind,
            "preserve": self.preserve,
            "dry_run": self.dry_run,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "skipped_tied": dict(self.skipped_tied),
            "layers": layers,
        }

    def to_plan(self) -> dict[str, Any]:
        """A JSON-ready plan of the replaced structure, for :func:`~structlin.apply_plan` on a freshly built model
        (see :mod:`structlin.swap._plan` for its format). ``TypeError`` if an option cannot be written to JSON;
        ``ValueError`` for a dry run."""
        if self.dry_run:
            raise ValueError("this SwapResult is from a dry run: nothing was replaced, so there is no plan")
        return make_plan([entry.plan_entry() for entry in self.layers])

    def __str__(self) -> str:
        head = ("layer", "shape", "kind", "start", "error", "error measured on", "params before", "params after")
        rows = [
            (
                ", ".join(e.names),
                f"{e.in_features}→{e.out_features}",
                e.kind,
                e.start,
                "–" if e.relative_error is None else f"{e.relative_error:.2e}",
                "–" if e.relative_error is None else ERROR_INPUTS.get(e.error_inputs, e.error_inputs),
                f"{e.params_before:,}",
                f"{e.params_after:,}",
            )
            for e in self.layers
        ]
        rows.append(("model", "", "", "", "", "", f"{self.params_before:,}", f"{self.params_after:,}"))
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        align = ["<", "<", "<", "<", ">", "<", ">", ">"]
        convs = sum(e.replaces.startswith("torch.nn.modules.conv.") for e in self.layers)
        count = f"{len(self.layers) - convs} linear layer{'' if len(self.layers) - convs == 1 else 's'}"
        if convs:
            count = (count + " and " if convs < len(self.layers) else "") + f"{convs} convolution{'s' * (convs > 1)}"
        lines = [("dry run: " if self.dry_run else "") + f"{count} → {self.kind!r} (preserve={self.preserve!r})"]
        for i, row in enumerate([head, *rows]):
            if i == 1 or i == len(rows):
                lines.append("  ".join("-" * w for w in widths))
            lines.append("  ".join(f"{str(c):{a}{w}}" for c, a, w in zip(row, align, widths)).rstrip())
        lines.extend(self._notes())
        return "\n".join(lines)

    def _notes(self) -> list[str]:
        notes = ["error: ‖new(x) − old(x)‖ / ‖old(x)‖ right after the swap"] if any(
            e.relative_error is not None for e in self.layers) else []
        fits = [e.fit for e in self.layers if e.fit is not None]
        if fits:
            stops: dict[str, int] = {}
            for f in fits:
                stops[f.stop] = stops.get(f.stop, 0) + 1
            how = ", ".join(f"{stop} ×{count}" for stop, count in stops.items())
            notes.append(f"fits: {len(fits)} layers, {sum(f.iterations for f in fits)} iterations, "
                         f"{sum(f.seconds for f in fits):.1f} s; stopped: {how}")
        untied = [e for e in self.layers if e.tied_to]
        for e in untied:
            notes.append(f"untied: {e.name} no longer shares {', '.join(e.tied_to)}")
        for name, shared in self.skipped_tied.items():
            notes.append(f"left alone (weights tied): {name} shares {', '.join(shared)}; tied='untie' replaces it")
        return notes
