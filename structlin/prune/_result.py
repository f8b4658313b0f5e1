"""What :func:`structlin.prune.shrink` returns: the smaller model, units kept per pair, metrics, costs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..report import Report

__all__ = ["PrunedPair", "ShrinkResult"]


@dataclass
class PrunedPair:
    """One pair of Linears and its hidden units.

    Attributes:
        first, second: qualified names of the Linears (the names in the returned model, which has the same
            structure).
        units_before, units_after: hidden units before and after.
        zero_outgoing: units removed because all their outgoing weights were zero.
        kept: the original indices of the kept units, ascending.
    """

    first: str
    second: str
    units_before: int
    units_after: int
    zero_outgoing: int
    kept: list[int] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "second": self.second, "units_before": self.units_before,
                "units_after": self.units_after, "zero_outgoing": self.zero_outgoing, "kept": list(self.kept)}


@dataclass
class ShrinkResult:
    """The outcome of :func:`~structlin.prune.shrink`. ``str(result)`` is a table; ``to_dict()`` is JSON-ready.

    Attributes:
        model: the rebuilt model (the input itself when ``inplace=True``, else a new one).
        layers: one :class:`PrunedPair` per pair, in the order they were found or given.
        metric_before: the validation metric of the input model.
        threshold: the lowest validation metric a pruned model may have (``metric_before`` minus the tolerance).
        metric_pruned: the validation metric of the rebuilt model before fine-tuning (``>= threshold``).
        metric_finetuned: the validation metric right after fine-tuning (``None`` without fine-tuning).
        finetune_kept: whether the fine-tuned weights were kept (they are dropped if they score below
            ``metric_pruned`` on the validation data).
        metric_after: the validation metric of ``model`` as returned.
        tolerance, relative, score: the call's settings.
        rounds: scoring rounds run; evaluations: validation passes the search made.
        finetune_losses: the training loss of each fine-tuning step.
        report_before, report_after: :func:`structlin.report` of the input and of the returned model on the
            first validation batch (``example_rows`` rows), forward and backward.
    """

    model: nn.Module = field(repr=False)
    layers: list[PrunedPair]
    metric_before: float
    threshold: float
    metric_pruned: float
    metric_finetuned: float | None
    finetune_kept: bool
    metric_after: float
    tolerance: float
    relative: bool
    score: str
    rounds: int
    evaluations: int
    finetune_losses: list[float] = field(repr=False)
    report_before: Report = field(repr=False)
    report_after: Report = field(repr=False)
    example_rows: int

    @property
    def params_before(self) -> int:
        return self.report_before.total.params

    @property
    def params_after(self) -> int:
        return self.report_after.total.params

    @property
    def flops_before(self) -> int:
        """Forward FLOPs of the input model on the example batch."""
        return self.report_before.total.forward_flops

    @property
    def flops_after(self) -> int:
        return self.report_after.total.forward_flops

    @property
    def units_before(self) -> int:
        return sum(p.units_before for p in self.layers)

    @property
    def units_after(self) -> int:
        return sum(p.units_after for p in self.layers)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the model; the reports as their ``to_dict()``)."""
        return {
            "layers": [p.to_dict() for p in self.layers],
            "metric_before": self.metric_before,
            "threshold": self.threshold,
            "metric_pruned": self.metric_pruned,
            "metric_finetuned": self.metric_finetuned,
            "finetune_kept": self.finetune_kept,
            "metric_after": self.metric_after,
            "tolerance": self.tolerance,
            "relative": self.relative,
            "score": self.score,
            "rounds": self.rounds,
            "evaluations": self.evaluations,
            "finetune_steps": len(self.finetune_losses),
            "example_rows": self.example_rows,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "forward_flops_before": self.flops_before,
            "forward_flops_after": self.flops_after,
            "backward_flops_before": self.report_before.total.backward_flops,
            "backward_flops_after": self.report_after.total.backward_flops,
            "report_before": self.report_before.to_dict(),
            "report_after": self.report_after.to_dict(),
        }

    def __str__(self) -> str:
        kind = "relative" if self.relative else "absolute"
        finetuned = ("not fine-tuned" if self.metric_finetuned is None else
                     f"{self.metric_finetuned:.4f} fine-tuned ({'kept' if self.finetune_kept else 'dropped'})")
        lines = [
            f"shrink ({self.score} score, tolerance {self.tolerance:g} {kind}): validation metric "
            f"{self.metric_before:.4f} → {self.metric_pruned:.4f} pruned (threshold {self.threshold:.4f}) → "
            f"{finetuned}; {self.rounds} rounds, {self.evaluations} evaluations",
        ]
        head = ("pair", "units before", "units after", "kept", "zero outgoing")
        rows = [(f"{p.first} → {p.second}", f"{p.units_before:,}", f"{p.units_after:,}",
                 f"{p.units_after / p.units_before:.3f}", f"{p.zero_outgoing:,}") for p in self.layers]
        rows.append(("all", f"{self.units_before:,}", f"{self.units_after:,}",
                     f"{self.units_after / max(self.units_before, 1):.3f}", ""))
        rows.append(("params", f"{self.params_before:,}", f"{self.params_after:,}",
                     f"{self.params_after / max(self.params_before, 1):.3f}", ""))
        rows.append((f"fwd FLOPs ({self.example_rows} rows)", f"{self.flops_before:,}", f"{self.flops_after:,}",
                     f"{self.flops_after / max(self.flops_before, 1):.3f}", ""))
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        align = ["<", ">", ">", ">", ">"]
        for i, row in enumerate([head, *rows]):
            if i in (1, len(self.layers) + 1):
                lines.append("  ".join("-" * w for w in widths))
            lines.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(row, align, widths)).rstrip())
        return "\n".join(lines)
