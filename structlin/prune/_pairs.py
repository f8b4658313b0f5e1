"""Which ``nn.Linear`` pairs share a layer of hidden units, masking those units, and rebuilding smaller Linears.

A *pair* is ``(first, second)``: two ``nn.Linear`` modules such that the ``first.out_features`` hidden units,
after an elementwise activation, are the whole input of ``second`` and go nowhere else. Removing hidden unit
``j`` then removes row ``j`` of ``first`` (weight and bias) and column ``j`` of ``second``'s weight, and nothing
else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..layers.activations import is_elementwise

__all__ = ["Pair", "find_pairs", "resolve_pairs", "masked", "rebuild"]

# modules that may sit between the two Linears of a pair besides elementwise activations: they act on each
# element alone (Dropout zeroes elements independently; in eval mode it is the identity)
_PASS_THROUGH = (nn.Dropout, nn.AlphaDropout, nn.Identity)


@dataclass(frozen=True)
class Pair:
    """Two Linears sharing ``units`` hidden units: ``first`` (``in → units``) and ``second`` (``units → out``)."""

    first: str
    second: str
    units: int

    @property
    def label(self) -> str:
        return f"{self.first or '(root)'} → {self.second}"


def _between_ok(module: nn.Module) -> bool:
    return is_elementwise(module) or isinstance(module, _PASS_THROUGH)


def find_pairs(model: nn.Module) -> list[Pair]:
    """The pairs inside every ``nn.Sequential`` of ``model`` (nested ones too).

    Within one Sequential, an ``nn.Linear`` followed by zero or more elementwise modules (``is_elementwise``:
    ReLU, LeakyReLU, GELU, Tanh, SiLU, Sigmoid, ELU, Softplus, Identity; or Dropout) and then another
    ``nn.Linear`` forms a pair. Only modules whose type is exactly ``nn.Linear`` count (as in :func:`structlin.swap`).
    """
    pairs = []
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for i, (name, child) in enumerate(children):
            if type(child) is not nn.Linear:
                continue
            for other_name, other in children[i + 1:]:
                if type(other) is nn.Linear:
                    pairs.append(Pair(_join(prefix, name), _join(prefix, other_name), child.out_features))
                    break
                if not _between_ok(other):
                    break
    return pairs


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def resolve_pairs(model: nn.Module, pairs: Sequence[tuple[str, str]] | None) -> list[Pair]:
    """Validate explicit ``(first, second)`` qualified names, or find the pairs of the Sequentials (``None``).

    Raises ``ValueError`` when there is no pair, a name is not an ``nn.Linear`` of the model, the shapes do not
    chain (``first.out_features != second.in_features``), or a Linear is the first (or the second) of two pairs.
    """
    if isinstance(model, nn.Linear) or not isinstance(model, nn.Module):
        raise TypeError(f"shrink expects an nn.Module that contains Linear pairs, got {type(model).__name__}")
    linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    if pairs is None:
        found = find_pairs(model)
        if not found:
            raise ValueError(
                "no prunable pair found: shrink needs nn.Linear → elementwise activation → nn.Linear inside an "
                f"nn.Sequential, or explicit pairs=[(first, second), ...]; the model's nn.Linear layers are "
                f"{sorted(linears) or 'none'}"
            )
        return found
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty: give at least one (first, second) pair of nn.Linear names, or None")
    result = []
    for entry in pairs:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and all(isinstance(n, str) for n in entry)):
            raise TypeError(f"each pair must be a (first, second) tuple of qualified names, got {entry!r}")
        first, second = entry
        for name in entry:
            if name not in linears:
                raise ValueError(f"{name!r} is not an nn.Linear of the model; its nn.Linear layers are "
                                 f"{sorted(linears) or 'none'}")
        if linears[first].out_features != linears[second].in_features:
            raise ValueError(f"pair ({first!r}, {second!r}) does not chain: {first} has out_features="
                             f"{linears[first].out_features}, {second} has in_features={linears[second].in_features}")
        if linears[first] is linears[second]:
            raise ValueError(f"pair ({first!r}, {second!r}) names one module twice")
        result.append(Pair(first, second, linears[first].out_features))
    for side in ("first", "second"):
        seen: dict[int, str] = {}
        for p in result:
            module = linears[getattr(p, side)]
            if id(module) in seen:
                raise ValueError(f"{getattr(p, side)!r} is the {side} Linear of more than one pair "
                                 f"(also as {seen[id(module)]!r})")
            seen[id(module)] = getattr(p, side)
    return result


class masked:
    """Context manager: the hidden units of each pair are multiplied by a 0/1 mask on their way into ``second``.

    ``probes`` (optional) asks for the hidden activations and a zero tensor added to them whose gradient is the
    gradient of the loss with respect to the (masked) hidden units: after a forward pass, ``records[i]`` holds
    ``(hidden, probe)`` for each call of pair ``i``'s second Linear.
    """

    def __init__(self, model: nn.Module, pairs: Sequence[Pair], masks: Sequence[torch.Tensor], probes: bool = False):
        self.modules = dict(model.named_modules())
        self.pairs, self.masks, self.probes = pairs, masks, probes
        self.records: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in pairs]
        self.handles = []

    def _hook(self, index: int):
        def hook(module, args):
            (h, *rest) = args
            h = h * self.masks[index].to(h.dtype)
            if self.probes:
                probe = torch.zeros_like(h, requires_grad=True)
                self.records[index].append((h.detach(), probe))
                h = h + probe
            return (h, *rest)
        return hook

    def __enter__(self) -> "masked":
        for i, p in enumerate(self.pairs):
            self.handles.append(self.modules[p.second].register_forward_pre_hook(self._hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _sub_linear(linear: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    weight = linear.weight.detach()
    if rows is not None:
        weight = weight.index_select(0, rows.to(weight.device))
    if cols is not None:
        weight = weight.index_select(1, cols.to(weight.device))
    bias = linear.bias
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                    dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        new.weight.requires_grad_(linear.weight.requires_grad)
        if bias is not None:
            b = bias.detach() if rows is None else bias.detach().index_select(0, rows.to(bias.device))
            new.bias.copy_(b)
            new.bias.requires_grad_(bias.requires_grad)
    new.train(linear.training)
    return new


def rebuild(model: nn.Module, pairs: Sequence[Pair], keep: Sequence[torch.Tensor]) -> dict[str, nn.Linear]:
    """Replace, in ``model``, each pair's Linears by smaller ones holding only the kept units.

    ``keep[i]`` is the sorted index tensor of pair ``i``'s kept hidden units: ``first`` becomes
    ``nn.Linear(in, k)`` with rows ``keep[i]`` of its weight and bias, ``second`` becomes ``nn.Linear(k, out)``
    with columns ``keep[i]`` of its weight and its bias unchanged (a Linear that is the second of one pair and the
    first of the next loses columns and rows). Same dtype, device, ``requires_grad`` and training mode. Every
    name a module is registered under gets the new one. Returns ``{name: new Linear}``.
    """
    modules = dict(model.named_modules())
    rows: dict[str, torch.Tensor] = {}
    cols: dict[str, torch.Tensor] = {}
    for p, k in zip(pairs, keep):
        rows[p.first] = k
        cols[p.second] = k
    replaced: dict[int, nn.Linear] = {}
    for name in [*rows, *(n for n in cols if n not in rows)]:
        old = modules[name]
        replaced[id(old)] = _sub_linear(old, rows.get(name), cols.get(name))
    new_by_name = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if id(module) in replaced and name:
            parent_name, _, attr = name.rpartition(".")
            setattr(modules[parent_name] if parent_name else model, attr, replaced[id(module)])
            new_by_name[name] = replaced[id(module)]
    return new_by_name
