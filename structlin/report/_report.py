"""The :class:`Report` of a model: one :class:`Row` per module, totals, comparison, and its text forms."""

from __future__ import annotations

import dataclasses
import json
import textwrap

from ..costs import Cost
from ._format import human, table

__all__ = ["Row", "Report", "Comparison", "CONVENTIONS", "UNITS"]

CONVENTIONS = (
    "FLOPs measured by running the model: multiply-add = 2, FFT 5·N·log2 N (real 2.5·N·log2 N), "
    "FWHT N·log2 N, pointwise 1 per output element (bias adds included; complex×complex 6, real×complex 2); "
    "backward = gradients of the inputs and trainable parameters; saved = activation bytes autograd keeps"
)
#: FLOPs per displayed unit
UNITS = {"flops": 1, "macs": 2}
_COST_FIELDS = ("params", "forward_flops", "backward_flops", "saved_bytes")


@dataclasses.dataclass(frozen=True)
class Row:
    """One module of the model. Counts include the module's children; ``self_cost`` is what ran in the module
    itself (so a report's rows' ``self_cost`` add up to its total).

    Attributes:
        name: qualified module name (``""`` for the root), as in ``model.named_modules()``.
        type: the module's class name.
        params, forward_flops, backward_flops, saved_bytes: the :class:`~structlin.Cost` fields.
        trainable_params: parameters that require grad.
        self_cost: the same fields counting the module's own parameters and ops only.
        operators: op name → ``(forward FLOPs, backward FLOPs)``, children included.
        unsupported: op name → calls, for ops with no FLOP formula (their FLOPs are unknown), children included.
        kind: the structlin layer kind, or ``None`` for other modules.
        dense: for a structured layer, the cost of the ``nn.Linear(in_features, out_features)`` it stands in
            for, measured on the same rows; ``None`` otherwise.
    """

    name: str
    type: str
    params: int
    trainable_params: int
    forward_flops: int
    backward_flops: int
    saved_bytes: int
    self_cost: Cost = Cost()
    operators: dict = dataclasses.field(default_factory=dict)
    unsupported: dict = dataclasses.field(default_factory=dict)
    kind: str | None = None
    dense: Cost | None = None

    @property
    def cost(self) -> Cost:
        return Cost(self.params, self.forward_flops, self.backward_flops, self.saved_bytes)

    @property
    def depth(self) -> int:
        """0 for the root, 1 for its children, …"""
        return 0 if self.name == "" else self.name.count(".") + 1

    @property
    def flops_known(self) -> bool:
        """False when an op with no FLOP formula ran in this module (its FLOPs are then a lower bound)."""
        return not self.unsupported

    @property
    def ratios(self) -> dict | None:
        """For a structured layer, ``{field: this layer's / the dense layer's}`` for the four Cost fields."""
        if self.dense is None:
            return None
        return {f: _ratio(getattr(self, f), getattr(self.dense, f)) for f in _COST_FIELDS}

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["operators"] = {k: list(v) for k, v in self.operators.items()}
        out["ratios"] = self.ratios
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Row":
        data = {k: v for k, v in data.items() if k != "ratios"}
        data["self_cost"] = Cost(**data["self_cost"])
        data["dense"] = Cost(**data["dense"]) if data.get("dense") is not None else None
        data["operators"] = {k: tuple(v) for k, v in data["operators"].items()}
        return cls(**data)


def _ratio(a: float, b: float) -> float | None:
    if b == 0:
        return 1.0 if a == 0 else None
    return a / b


@dataclasses.dataclass(frozen=True)
class Report:
    """Parameters, FLOPs (forward and backward) and saved bytes of a model, per module. Built by
    :func:`structlin.report`; see ``docs/report.md``.

    Attributes:
        rows: one :class:`Row` per module, in ``named_modules()`` order (root first).
        unit: ``"flops"`` or ``"macs"`` (MACs = FLOPs / 2): the unit of the text forms; counts are stored in FLOPs.
        max_depth: the deepest module level shown by the text forms (``None``: all).
        backward: whether the backward pass was run and counted.
    """

    rows: tuple[Row, ...]
    unit: str = "flops"
    max_depth: int | None = None
    backward: bool = True

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {sorted(UNITS)}, got {self.unit!r}")
        if self.max_depth is not None and (not isinstance(self.max_depth, int) or self.max_depth < 0):
            raise ValueError(f"max_depth must be None or an int >= 0, got {self.max_depth!r}")

    @property
    def total(self) -> Cost:
        """The whole model's :class:`~structlin.Cost` (the root row's)."""
        return self.rows[0].cost

    def row(self, name: str) -> Row:
        """The row of the module with qualified name ``name`` (``""`` for the root)."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no module named {name!r}; modules: {[r.name for r in self.rows]}")

    def by_operator(self, name: str = "") -> dict[str, tuple[int, int]]:
        """Op name → ``(forward FLOPs, backward FLOPs)`` in module ``name`` (the whole model by default),
        largest first. Ops with no formula are not here but in :meth:`unsupported`."""
        ops = self.row(name).operators
        return dict(sorted(ops.items(), key=lambda item: -sum(item[1])))

    def unsupported(self, name: str = "") -> dict[str, int]:
        """Op name → calls for the ops that ran with no FLOP formula (their FLOPs are unknown, not 0)."""
        return dict(self.row(name).unsupported)

    def with_options(self, *, unit: str | None = None, max_depth: int | None | str = "keep") -> "Report":
        """The same counts shown in another unit or folded to another depth."""
        return dataclasses.replace(
            self, unit=self.unit if unit is None else unit, max_depth=self.max_depth if max_depth == "keep" else max_depth
        )

    def visible_rows(self, max_depth: int | None = None) -> list[Row]:
        """The rows no deeper than ``max_depth`` (the report's own ``max_depth`` when omitted; all if ``None``)."""
        depth = self.max_depth if max_depth is None else max_depth
        return [r for r in self.rows if depth is None or r.depth <= depth]

    def compare(self, other: "Report") -> "Comparison":
        """Before (``self``) and after (``other``): the rows of modules both models have, and the totals."""
        return Comparison(self, other)

    # --- serialization -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready dict: conventions, unit, totals and every row; :meth:`from_dict` rebuilds the report."""
        return {
            "conventions": CONVENTIONS,
            "unit": self.unit,
            "max_depth": self.max_depth,
            "backward": self.backward,
            "total": dataclasses.asdict(self.total),
            "rows": [row.to_dict() for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        return cls(
            rows=tuple(Row.from_dict(r) for r in data["rows"]),
            unit=data["unit"],
            max_depth=data["max_depth"],
            backward=data["backward"],
        )

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as JSON (``kwargs`` go to ``json.dumps``); :meth:`from_json` reads it back exactly."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Report":
        return cls.from_dict(json.loads(text))

    # --- text ----------------------------------------------------------------------------------------------
    def _table(self, max_depth: int | None, markdown: bool) -> str:
        scale = UNITS[self.unit]
        flop = "MACs" if self.unit == "macs" else "FLOPs"
        header = ["module", "type", "params", f"fwd {flop}", f"bwd {flop}", "saved",
                  "dense params", f"dense fwd {flop}", "params ×", "fwd ×"]
        body = []
        for r in self.visible_rows(max_depth):
            mark = "" if r.flops_known else "?"
            indent = "" if markdown else "  " * r.depth
            ratios = r.ratios or {}
            body.append([
                indent + (r.name or "(root)"),
                r.type,
                human(r.params),
                human(r.forward_flops / scale) + mark,
                (human(r.backward_flops / scale) + mark) if self.backward else "-",
                human(r.saved_bytes, binary=True) + "B",
                human(r.dense.params) if r.dense else "",
                human(r.dense.forward_flops / scale) if r.dense else "",
                _fmt_ratio(ratios.get("params")),
                _fmt_ratio(ratios.get("forward_flops")),
            ])
        return table(header, body, markdown=markdown)

    def _footer(self) -> list[str]:
        lines = []
        if self.unit == "macs":
            lines.append("MACs = FLOPs / 2.")
        missing = self.unsupported()
        if missing:
            listed = ", ".join(f"{op} ({calls} calls)" for op, calls in missing.items())
            lines.append(f"? = FLOPs unknown: ops with no formula ran there: {listed}")
        return lines

    def to_markdown(self, max_depth: int | None = None) -> str:
        """A markdown table (rows folded to ``max_depth``, default the report's), conventions below it."""
        lines = [self._table(max_depth, markdown=True), "", f"*{CONVENTIONS}.*"]
        lines += [f"*{line}*" for line in self._footer()]
        return "\n".join(lines)

    def format(self, max_depth: int | None = None) -> str:
        """The fixed-width table of ``str(report)``, folded to ``max_depth`` (default the report's)."""
        total = self.total
        flop = "MACs" if self.unit == "macs" else "FLOPs"
        scale = UNITS[self.unit]
        head = [
            "structlin report",
            *textwrap.wrap(f"conventions: {CONVENTIONS}.", 110, subsequent_indent="  "),
            f"total: {human(total.params)} params, {human(total.forward_flops / scale)} forward {flop}, "
            + (f"{human(total.backward_flops / scale)} backward {flop}, " if self.backward else "backward not run, ")
            + f"{human(total.saved_bytes, binary=True)}B saved",
        ]
        return "\n".join(head + [self._table(max_depth, markdown=False)] + self._footer())

    def __str__(self) -> str:
        return self.format()


def _fmt_ratio(value) -> str:
    return "" if value is None else f"{value:.3g}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Two reports side by side (``before``, ``after``), matched by module name. Ratios are after / before."""

    before: Report
    after: Report

    @property
    def names(self) -> list[str]:
        after = {r.name for r in self.after.rows}
        return [r.name for r in self.before.rows if r.name in after]

    @property
    def total_ratios(self) -> dict:
        return self.ratios("")

    def ratios(self, name: str) -> dict:
        """``{field: after / before}`` for module ``name``'s four Cost fields."""
        a, b = self.before.row(name), self.after.row(name)
        return {f: _ratio(getattr(b, f), getattr(a, f)) for f in _COST_FIELDS}

    def to_dict(self) -> dict:
        rows = []
        for name in self.names:
            a, b = self.before.row(name), self.after.row(name)
            rows.append({"name": name, "type_before": a.type, "type_after": b.type,
                         "before": dataclasses.asdict(a.cost), "after": dataclasses.asdict(b.cost),
                         "ratios": self.ratios(name)})
        return {"conventions": CONVENTIONS, "rows": rows}

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as JSON (``kwargs`` go to ``json.dumps``); :meth:`from_json` reads it back exactly."""
        return json.dumps(self.to_dict(), **kwargs)

    def _body(self, max_depth: int | None, markdown: bool) -> str:
        scale = UNITS[self.before.unit]
        flop = "MACs" if self.before.unit == "macs" else "FLOPs"
        header = ["module", "before", "after", "params", "params ×", f"fwd {flop}", "fwd ×", f"bwd {flop}", "bwd ×",
                  "saved", "saved ×"]
        depth = self.before.max_depth if max_depth is None else max_depth
        body = []
        for name in self.names:
            a, b = self.before.row(name), self.after.row(name)
            if depth is not None and a.depth > depth:
                continue
            r = self.ratios(name)
            body.append([
                ("" if markdown else "  " * a.depth) + (name or "(root)"), a.type, b.type,
                f"{human(a.params)} → {human(b.params)}", _fmt_ratio(r["params"]),
                f"{human(a.forward_flops / scale)} → {human(b.forward_flops / scale)}", _fmt_ratio(r["forward_flops"]),
                f"{human(a.backward_flops / scale)} → {human(b.backward_flops / scale)}", _fmt_ratio(r["backward_flops"]),
                f"{human(a.saved_bytes, binary=True)}B → {human(b.saved_bytes, binary=True)}B", _fmt_ratio(r["saved_bytes"]),
            ])
        return table(header, body, markdown=markdown)

    def to_markdown(self, max_depth: int | None = None) -> str:
        return self._body(max_depth, markdown=True) + f"\n\n*× = after / before. {CONVENTIONS}.*"

    def format(self, max_depth: int | None = None) -> str:
        head = ["structlin comparison (× = after / before)",
                *textwrap.wrap(f"conventions: {CONVENTIONS}.", 110, subsequent_indent="  ")]
        return "\n".join(head + [self._body(max_depth, markdown=False)])

    def __str__(self) -> str:
        return self.format()
