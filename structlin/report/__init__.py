"""The parameter/FLOP accountant: :func:`report` runs a model once and counts each module's parameters, forward
and backward FLOPs and saved activation bytes, structured transforms included, with the dense ``nn.Linear``
beside each structured layer. Conventions and a worked example: ``docs/report.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ..costs import Cost
from ..layers.base import StructuredLayer
from ._counter import ModuleCounts, measure
from ._ops import DATA_MOVEMENT, register_data_movement
from ._report import CONVENTIONS, SCALES, Comparison, Report, Row

__all__ = ["report", "Report", "Row", "Comparison", "CONVENTIONS", "SCALES", "register_data_movement", "DATA_MOVEMENT"]


def report(
    model: nn.Module,
    *example_inputs,
    input_size: Sequence[int] | None = None,
    backward: bool = True,
    unit: str = "flops",
    max_depth: int | None = None,
    scale: str = "auto",
) -> Report:
    """Count ``model``'s parameters, FLOPs and saved bytes per module by running it once.

    The model runs forward on the inputs (and, if ``backward``, backward from a gradient of ones on every output
    that requires grad) under a counting mode that sees every op, backward included: matmuls, FFTs, structlin's
    transforms, pointwise ops. Nothing changes: parameters, their ``.grad`` and buffers are as before; the inputs
    are detached copies that require grad (so the backward includes the input gradient).

    Args:
        model: any ``nn.Module``.
        *example_inputs: the arguments of ``model(...)``; or give ``input_size``.
        input_size: the shape of one input made with ``torch.randn`` (dtype and device of the first parameter).
        backward: also run and count the backward pass.
        unit: ``"flops"`` or ``"macs"`` (MACs = FLOPs / 2) for the text forms.
        max_depth: fold the text forms to modules this deep (0 = root only).
        scale: how the text forms write counts: ``"auto"`` (``4.63M``), ``"raw"`` (every digit), or ``"K"``,
            ``"M"``, ``"G"``, ``"T"`` (every count in that unit; bytes in KiB, MiB, …).

    Returns:
        a :class:`Report`: ``.total`` (a :class:`~structlin.Cost`), ``.rows`` (one per module), ``.row(name)``,
        ``.compare(other)``, ``by_operator()``, ``unsupported()`` (ops with no FLOP formula), ``marked()`` (the
        rows they mark), ``to_dict()``, ``to_json()``, ``to_markdown()`` and ``str()`` (at most 100 columns).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"report expects an nn.Module, got {type(model).__name__}")
    if input_size is not None:
        if example_inputs:
            raise ValueError("give example inputs or input_size, not both")
        first = next(iter(model.parameters()), None)
        factory = {"dtype": first.dtype, "device": first.device} if first is not None else {}
        example_inputs = (torch.randn(*input_size, **factory),)
    if not example_inputs:
        raise ValueError("report needs example inputs (report(model, x)) or input_size=(...)")
    options = Report(rows=(), unit=unit, max_depth=max_depth, backward=backward, scale=scale)  # checked first
    counts = measure(model, tuple(example_inputs), backward=backward)
    return dataclasses.replace(options, rows=tuple(_rows(model, counts, backward)))


def _rows(model: nn.Module, counts: dict[str, ModuleCounts], backward: bool) -> list[Row]:
    modules = list(model.named_modules())
    own_params: dict[str, list] = {name: [] for name, _ in modules}
    for qualified, p in model.named_parameters():
        owner = qualified.rpartition(".")[0]
        own_params[owner].append(p)
    selfs = {}
    for name, _ in modules:
        c = counts.get(name, ModuleCounts())
        params = own_params[name]
        selfs[name] = (
            Cost(sum(p.numel() for p in params), c.forward_flops, c.backward_flops, c.saved_bytes),
            sum(p.numel() for p in params if p.requires_grad),
        )
    rows = []
    for name, module in modules:
        members = [n for n, _ in modules if _within(n, name)]
        total = sum((selfs[n][0] for n in members), Cost())
        operators: dict[str, list[int]] = {}
        unsupported: dict[str, int] = {}
        for n in members:
            c = counts.get(n)
            if c is None:
                continue
            for op, (f, b) in c.operators.items():
                acc = operators.setdefault(op, [0, 0])
                acc[0] += f
                acc[1] += b
            for op, calls in c.unsupported.items():
                unsupported[op] = unsupported.get(op, 0) + calls
        structured = isinstance(module, StructuredLayer)
        rows.append(Row(
            name=name,
            type=type(module).__name__,
            params=total.params,
            trainable_params=sum(selfs[n][1] for n in members),
            forward_flops=total.forward_flops,
            backward_flops=total.backward_flops,
            saved_bytes=total.saved_bytes,
            self_cost=selfs[name][0],
            operators={op: tuple(v) for op, v in operators.items()},
            unsupported=unsupported,
            kind=module.kind if structured else None,
            dense=_dense_cost(module, counts.get(name), backward) if structured else None,
        ))
    return rows


def _within(name: str, ancestor: str) -> bool:
    return ancestor == "" or name == ancestor or name.startswith(ancestor + ".")


def _dense_cost(layer: StructuredLayer, counts: ModuleCounts | None, backward: bool) -> Cost:
    """The measured cost of the ``nn.Linear`` the layer stands in for, on the rows the layer saw (meta tensors:
    shapes only, nothing is computed)."""
    rows = counts.rows if counts is not None else 0
    first = next(iter(layer.parameters()), None)
    dtype = first.dtype if first is not None else torch.get_default_dtype()
    bias = getattr(layer, "bias", None) is not None
    dense = nn.Linear(layer.in_features, layer.out_features, bias=bias, device="meta", dtype=dtype)
    x = torch.empty(rows, layer.in_features, device="meta", dtype=dtype)
    c = measure(dense, (x,), backward=backward)[""]
    return Cost(sum(p.numel() for p in dense.parameters()), c.forward_flops, c.backward_flops, c.saved_bytes)
