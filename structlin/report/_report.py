"""The :class:`Report` of a model: one :class:`Row` per module, totals, comparison, and its text forms."""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import textwrap

from ..costs import Cost
from ._format import SCALES, WIDTH, number, table

__all__ = ["Row", "Report", "Comparison", "CONVENTIONS", "UNITS", "SCALES"]

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
        """False when an op with no FLOP formula ran in this module or below it (its FLOPs are then a lower
        bound)."""
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
        scale: how the text forms write counts: ``"auto"`` (a prefix per number, ``4.63M``), ``"raw"`` (every
            digit) or ``"K"``, ``"M"``, ``"G"``, ``"T"`` (every count in that unit; bytes in KiB, MiB, …).
    """

    rows: tuple[Row, ...]
    unit: str = "flops"
    max_depth: int | None = None
    backward: bool = True
    scale: str = "auto"

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {sorted(UNITS)}, got {self.unit!r}")
        if self.max_depth is not None and (not isinstance(self.max_depth, int) or self.max_depth < 0):
            raise ValueError(f"max_depth must be None or an int >= 0, got {self.max_depth!r}")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")

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
        """Op name → calls for the ops that ran with no FLOP formula in module ``name`` and its children (the whole
        model by default); their FLOPs are unknown, not 0, so the FLOPs of the modules they ran in are lower
        bounds. Empty when every op was counted."""
        return dict(self.row(name).unsupported)

    def with_options(self, *, unit: str | None = None, max_depth: int | None | str = "keep",
                     scale: str | None = None) -> "Report":
        """The same counts shown in another unit or scale, or folded to another depth."""
        return dataclasses.replace(
            self,
            unit=self.unit if unit is None else unit,
            max_depth=self.max_depth if max_depth == "keep" else max_depth,
            scale=self.scale if scale is None else scale,
        )

    def visible_rows(self, max_depth: int | None = None) -> list[Row]:
        """The rows no deeper than ``max_depth`` (the report's own ``max_depth`` when omitted; all if ``None``)."""
        depth = self.max_depth if max_depth is None else max_depth
        return [r for r in self.rows if depth is None or r.depth <= depth]

    def marked(self, max_depth: int | None = None) -> list[str]:
        """The names of the rows the text forms mark with ``?``, folded to ``max_depth`` (default the report's): each
        op with no formula marks one row, the module it ran in or, when that module is folded away, its deepest
        shown ancestor. The rows above a marked one are lower bounds too, but are not marked."""
        rows = self.visible_rows(max_depth)
        shown = {r.name for r in rows}
        children_of = collections.defaultdict(list)
        for c in self.rows[1:]:
            children_of[c.name.rpartition(".")[0]].append(c)
        marked = []
        for r in rows:
            children = children_of[r.name]
            if any(c.name not in shown for c in children):  # folded: everything below counts as its own
                own = r.unsupported
            else:
                own = collections.Counter(r.unsupported)
                for c in children:
                    own.subtract(c.unsupported)
                own = {op: calls for op, calls in own.items() if calls > 0}
            if own:
                marked.append(r.name)
        return marked

    def compare(self, other: "Report") -> "Comparison":
        """Before (``self``) and after (``other``): the rows of modules both models have, and the totals."""
        return Comparison(self, other)

    # --- serialization -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready dict: conventions, unit, totals and every row; :meth:`from_dict` rebuilds the report."""
        return {
            "conventions": CONVENTIONS,
            "unit": self.unit,
            "scale": self.scale,
            "max_depth": self.max_depth,
            "backward": self.backward,
            "total": dataclasses.asdict(self.total),
            "unsupported": self.unsupported(),
            "rows": [row.to_dict() for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        return cls(
            rows=tuple(Row.from_dict(r) for r in data["rows"]),
            unit=data["unit"],
            max_depth=data["max_depth"],
            backward=data["backward"],
            scale=data.get("scale", "auto"),
        )

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as JSON (``kwargs`` go to ``json.dumps``); :meth:`from_json` reads it back exactly."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Report":
        return cls.from_dict(json.loads(text))

    # --- text ----------------------------------------------------------------------------------------------
    def _count(self, flops: int) -> str:
        return number(flops / UNITS[self.unit], self.scale)

    def _table(self, max_depth: int | None, markdown: bool) -> str:
        flop = _flop_label(self.unit)
        rows = self.visible_rows(max_depth)
        marked = set(self.marked(max_depth))
        structured = any(r.dense is not None for r in rows)
        header = ["module", "type", "params", f"fwd {flop}"] + ([f"bwd {flop}"] if self.backward else []) + ["saved"]
        if structured:
            header += ["params/dense", "fwd/dense"] + (["bwd/dense"] if self.backward else [])
        body = []
        for r in rows:
            mark = "?" if r.name in marked else ""
            cells = [_module_cell(r, markdown), r.type, number(r.params, self.scale),
                     self._count(r.forward_flops) + mark]
            if self.backward:
                cells.append(self._count(r.backward_flops) + mark)
            cells.append(_bytes(r.saved_bytes, self.scale))
            if structured:
                ratios = r.ratios or {}
                cells += [_fmt_ratio(ratios.get("params")), _fmt_ratio(ratios.get("forward_flops"))]
                if self.backward:
                    cells.append(_fmt_ratio(ratios.get("backward_flops")))
            body.append(cells)
        return table(header, body, markdown=markdown, width=None if markdown else WIDTH)

    def _footer(self, max_depth: int | None) -> list[str]:
        lines = []
        if self.unit == "macs":
            lines.append("MACs = FLOPs / 2.")
        missing = self.unsupported()
        if missing:
            listed = ", ".join(f"{op} ({_calls(calls)})" for op, calls in sorted(missing.items()))
            lines.append(f"? = FLOPs unknown, ops with no formula ran there: {listed}. "
                         "The FLOPs of those rows and of the rows above them are lower bounds.")
        if any(r.dense is not None for r in self.visible_rows(max_depth)):
            lines.append("x/dense = this layer's count / that of the nn.Linear it stands in for, on the same rows.")
        return lines

    def to_markdown(self, max_depth: int | None = None) -> str:
        """A markdown table (rows folded to ``max_depth``, default the report's; qualified module names),
        conventions below it."""
        lines = [self._table(max_depth, markdown=True), "", f"*{CONVENTIONS}.*"]
        lines += [f"*{line}*" for line in self._footer(max_depth)]
        return "\n".join(lines)

    def format(self, max_depth: int | None = None) -> str:
        """The fixed-width text of ``str(report)``, at most 100 columns wide: a header (conventions, totals), one
        row per module (indented by depth, named by the last part of its qualified name), folded to ``max_depth``
        (default the report's), and a footer for ops with no formula."""
        total = self.total
        flop = _flop_label(self.unit)
        totals = (f"total: {number(total.params, self.scale)} params, {self._count(total.forward_flops)} forward "
                  f"{flop}, ")
        totals += f"{self._count(total.backward_flops)} backward {flop}, " if self.backward else "backward not run, "
        totals += f"{_bytes(total.saved_bytes, self.scale)} saved"
        lines = ["structlin report", *_wrap(f"conventions: {CONVENTIONS}."), *_wrap(totals),
                 self._table(max_depth, markdown=False)]
        for line in self._footer(max_depth):
            lines += _wrap(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _flop_label(unit: str) -> str:
    return "MACs" if unit == "macs" else "FLOPs"


def _module_cell(row: Row, markdown: bool) -> str:
    """Markdown: the qualified name; text: the last part of it, indented by depth (a tree)."""
    if row.name == "":
        return "(root)"
    return row.name if markdown else "  " * row.depth + row.name.rpartition(".")[2]


def _bytes(value: int, scale: str) -> str:
    return number(value, scale, binary=True) + "B"


def _calls(calls: int) -> str:
    return f"{calls} call" + ("" if calls == 1 else "s")


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def _pair(before: str, after: str) -> str:
    """``"9.69M→12.6M"`` written ``"9.69→12.6M"``: a unit the two share is written once."""
    unit = re.search(r"[A-Za-z]*$", before).group()
    if unit and after.endswith(unit) and after[: -len(unit)][-1:].isdigit() and before[: -len(unit)][-1:].isdigit():
        return f"{before[: -len(unit)]}→{after}"
    return f"{before}→{after}"


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

    @property
    def backward(self) -> bool:
        """Whether both reports counted the backward pass (the text forms show backward columns only then)."""
        return self.before.backward and self.after.backward

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
        return {"conventions": CONVENTIONS, "backward": self.backward, "rows": rows}

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as JSON (``kwargs`` go to ``json.dumps``); :meth:`from_json` reads it back exactly."""
        return json.dumps(self.to_dict(), **kwargs)

    def _body(self, max_depth: int | None, markdown: bool) -> str:
        before, after = self.before, self.after
        flop = _flop_label(before.unit)
        depth = before.max_depth if max_depth is None else max_depth
        marked = set(before.marked(depth)) | set(after.marked(depth))
        header = ["module", "type", "params", "×", f"fwd {flop}", "×"]
        header += [f"bwd {flop}", "×"] if self.backward else []
        header += ["saved", "×"]
        body = []
        for name in self.names:
            a, b = before.row(name), after.row(name)
            if depth is not None and a.depth > depth:
                continue
            r, mark = self.ratios(name), "?" if name in marked else ""
            count, scale = before._count, before.scale
            cells = [_module_cell(a, markdown), a.type if a.type == b.type else f"{a.type}→{b.type}",
                     _pair(number(a.params, scale), number(b.params, scale)), _fmt_ratio(r["params"]),
                     _pair(count(a.forward_flops), count(b.forward_flops)) + mark, _fmt_ratio(r["forward_flops"])]
            if self.backward:
                cells += [_pair(count(a.backward_flops), count(b.backward_flops)) + mark,
                          _fmt_ratio(r["backward_flops"])]
            cells += [_pair(_bytes(a.saved_bytes, scale), _bytes(b.saved_bytes, scale)), _fmt_ratio(r["saved_bytes"])]
            body.append(cells)
        ratios = {i for i, title in enumerate(header) if title == "×"}
        return table(header, body, markdown=markdown, width=None if markdown else WIDTH, close=ratios)

    def _footer(self) -> list[str]:
        lines = []
        for label, report in (("before", self.before), ("after", self.after)):
            missing = report.unsupported()
            if missing:
                listed = ", ".join(f"{op} ({_calls(calls)})" for op, calls in sorted(missing.items()))
                lines.append(f"? = FLOPs unknown {label}, ops with no formula ran there: {listed}.")
        return lines

    def to_markdown(self, max_depth: int | None = None) -> str:
        lines = [self._body(max_depth, markdown=True), "", f"*× = after / before. {CONVENTIONS}.*"]
        lines += [f"*{line}*" for line in self._footer()]
        return "\n".join(lines)

    def format(self, max_depth: int | None = None) -> str:
        """The fixed-width text of ``str(comparison)``, at most 100 columns wide, in the before report's unit,
        scale and depth."""
        lines = ["structlin comparison (× = after / before)", *_wrap(f"conventions: {CONVENTIONS}."),
                 self._body(max_depth, markdown=False)]
        for line in self._footer():
            lines += _wrap(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()
