"""Finding a model's linear-like modules, their parents and shared parameters; putting a replacement in place."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..layers.base import StructuredLayer
from ._adapters import ConvAdapter, LinearAdapter, conv_adapter, linear_adapter

__all__ = ["Candidate", "find_linear_like", "other_modules", "shared_with", "count_parameters", "install",
           "move_hooks", "parent_of"]

# the per-module hook dictionaries a replacement takes over from the module it replaces
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
)
_COUNTED_HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


@dataclass
class Candidate:
    """A linear-like module (or a convolution) of the model, with every qualified name it is registered under."""

    module: nn.Module
    names: list[str]
    adapter: LinearAdapter | ConvAdapter


def _inside_structured(name: str, structured: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in structured for i in range(1, len(parts)))


def find_linear_like(model: nn.Module, conv_dims: tuple[int, ...] = ()) -> list[Candidate]:
    """Every module below ``model`` whose exact type has a linear adapter, and the ``nn.Conv{d}d`` for ``d`` in
    ``conv_dims``, in module order, except the parts of structured layers (their internals are not the model's
    layers)."""
    modules = list(model.named_modules(remove_duplicate=False))
    structured = {name for name, module in modules if isinstance(module, StructuredLayer)}
    found: dict[int, Candidate] = {}
    for name, module in modules:
        if not name or _inside_structured(name, structured):
            continue
        adapter = linear_adapter(module) or conv_adapter(module)
        if isinstance(adapter, ConvAdapter) and adapter.dims not in conv_dims:
            continue
        if adapter is not None:
            found.setdefault(id(module), Candidate(module, [], adapter)).names.append(name)
    return list(found.values())


def other_modules(model: nn.Module, candidates: list[Candidate]) -> dict[str, str]:
    """Name → type name of the modules that are not candidates (for messages about patterns)."""
    taken = {id(c.module) for c in candidates}
    return {name: type(m).__name__ for name, m in model.named_modules() if name and id(m) not in taken}


def shared_with(model: nn.Module, candidate: Candidate) -> list[str]:
    """Qualified names of parameters outside ``candidate`` that are the same tensors as its own (a tied weight),
    e.g. ``["transformer.wte.weight"]`` for GPT-2's ``lm_head``."""
    own = {id(p) for p in candidate.module.parameters()}
    prefixes = tuple(f"{name}." for name in candidate.names)
    return [name for name, p in model.named_parameters(remove_duplicate=False)
            if id(p) in own and not name.startswith(prefixes)]


def count_parameters(model: nn.Module, *, leave_out: list[str] = ()) -> int:
    """Elements of ``model``'s parameters, each tensor once (as ``model.parameters()`` yields them); the
    parameters reachable only below the module names in ``leave_out`` are not counted."""
    prefixes = tuple(f"{name}." for name in leave_out)
    kept: dict[int, int] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if not prefixes or not name.startswith(prefixes):
            kept[id(p)] = p.numel()
    return sum(kept.values())


def parent_of(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, attr = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), attr


def move_hooks(source: nn.Module, target: nn.Module) -> int:
    """Give ``target`` the hook dictionaries of ``source`` (the same objects, so existing handles still work);
    returns the number of forward, forward-pre and backward hooks moved."""
    moved = 0
    for attr in _HOOK_DICTS:
        hooks, own = getattr(source, attr), getattr(target, attr)
        if not hooks:
            continue
        if own:
            raise RuntimeError(f"cannot move {attr} to a {type(target).__name__} that already has its own")
        setattr(target, attr, hooks)
        setattr(source, attr, own)
        if attr in _COUNTED_HOOKS:
            moved += len(hooks)
    if source._backward_hooks or target._backward_hooks:
        target._is_full_backward_hook, source._is_full_backward_hook = source._is_full_backward_hook, None
    return moved


def install(model: nn.Module, names: list[str], original: nn.Module, layer: nn.Module) -> int:
    """Put ``layer`` in place of ``original`` under every one of ``names``: same training mode, frozen when none
    of ``original``'s parameters required grad, with ``original``'s hooks. Returns the number of hooks moved."""
    layer.train(original.training)
    params = list(original.parameters())
    if params and not any(p.requires_grad for p in params):
        layer.requires_grad_(False)
    for name in names:
        parent, attr = parent_of(model, name)
        setattr(parent, attr, layer)
    return move_hooks(original, layer)
