"""Running a model once, forward and backward, and counting what each of its modules does.

A :class:`torch.utils._python_dispatch.TorchDispatchMode` sees every op that runs (below autograd, so the
backward's ops too) and counts it with :func:`._ops.formula_for`; an op whose tensors, inputs and outputs, are
all integer or boolean (index, mask and position arithmetic, such as the ``cumsum`` of an attention mask) does
no floating-point work and counts 0. Attribution to modules:

* forward: forward pre/post hooks on every module keep a stack of qualified names; an op belongs to the
  innermost module running.
* backward: on leaving a module (and on entering one, for what its caller computed) the autograd nodes its
  ops created, walked back from its outputs (inputs) until an already tagged node, get the module's name in
  ``node.metadata``; during backward an op belongs to the module of the node that runs it
  (``torch._C._current_autograd_node()``). After a node has run (its post hook), the autograd engine adds its
  gradients to those already waiting for tensors used more than once: those sums belong to the innermost module
  holding every use of the tensor (the common ancestor of its consumers' modules), e.g. a residual block, not
  the layer whose gradient happened to arrive second.

Saved bytes: the tensors autograd saves in the forward (``torch.autograd.graph.saved_tensors_hooks``) that
were computed from the model's inputs (activations), each save counted once; tensors computed from
parameters and buffers alone (parameter-sized) are not.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

from ..layers.activations import observer
from ._call import tensors as _tensors
from ._ops import formula_for, op_name

__all__ = ["ModuleCounts", "measure"]

_TAG = "structlin.report.module"
_META = {
    torch.ops.aten.is_contiguous.default,
    torch.ops.aten.is_contiguous.memory_format,
    torch.ops.aten.size.default,
    torch.ops.aten.stride.default,
    torch.ops.aten.storage_offset.default,
    torch.ops.aten.numel.default,
    torch.ops.aten.dim.default,
    torch.ops.prim.device.default,
    torch.ops.prim.layout.default,
}


@dataclasses.dataclass
class ModuleCounts:
    """What ran directly in one module (not in its children) during one measurement."""

    forward_flops: int = 0
    backward_flops: int = 0
    saved_bytes: int = 0
    #: op name → [forward FLOPs, backward FLOPs]
    operators: dict = dataclasses.field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    #: op name → number of calls, for ops with no FLOP formula
    unsupported: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    #: rows of ``(..., in_features)`` inputs seen by forward (structured layers' dense alternative)
    rows: int = 0


def _tag_graph(tensors, name: str) -> None:
    """Give ``name`` to every autograd node reachable from ``tensors`` that has no module yet."""
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or _TAG in node.metadata:
            continue
        node.metadata[_TAG] = name
        stack.extend(next_node for next_node, _ in node.next_functions)


def _common_module(names) -> str:
    """The innermost module containing all of ``names`` (qualified names; ``""`` is the root)."""
    parts = [name.split(".") if name else [] for name in names]
    common = []
    for level in zip(*parts):
        if any(p != level[0] for p in level):
            break
        common.append(level[0])
    return ".".join(common)


def _watch_gradient_sums(outputs, mode: "_CountingMode") -> list:
    """Post hooks on every node of the graph behind ``outputs`` telling ``mode`` which module owns the gradient
    sums the engine does right after the node runs. Returns the hooks' handles."""
    consumers: dict[int, list] = defaultdict(list)
    nodes, stack, seen = [], [t.grad_fn for t in outputs if t.grad_fn is not None], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        for next_node, _ in node.next_functions:
            if next_node is not None:
                consumers[id(next_node)].append(node.metadata.get(_TAG, ""))
                stack.append(next_node)
    handles = []
    for node in nodes:
        shared = [consumers[id(n)] for n, _ in node.next_functions if n is not None and len(consumers[id(n)]) > 1]
        if shared:
            owner = _common_module([name for users in shared for name in users])
            handles.append(node.register_hook(functools.partial(mode.after_node, node.metadata, owner)))
    return handles


class _CountingMode(TorchDispatchMode):
    def __init__(self, counts: dict[str, ModuleCounts], stack: list[str], tainted: WeakIdKeyDictionary):
        super().__init__()
        self.counts, self.stack, self.tainted = counts, stack, tainted
        self.finished = (None, "")  # (metadata of the node that has just run, owner of the sums that follow)

    def after_node(self, metadata, owner, grad_inputs, grad_outputs):
        self.finished = (metadata, owner)

    def current(self) -> ModuleCounts:
        node = torch._C._current_autograd_node()
        if node is not None:
            if node.metadata is self.finished[0]:
                return self.counts[self.finished[1]]
            return self.counts[node.metadata.get(_TAG, "")]
        return self.counts[self.stack[-1] if self.stack else ""]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _META:
            return func(*args, **kwargs)
        formula = formula_for(func)
        if formula is None:
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        counts, backward = self.current(), torch._C._current_autograd_node() is not None
        operands = _tensors((args, kwargs, out))
        if not any(t.is_floating_point() or t.is_complex() for t in operands):
            flops = 0  # integer and boolean ops (indices, masks, positions) do no floating-point work
        else:
            flops = formula(args, kwargs, out) if formula is not None else None
        name = op_name(func)
        if flops is None:
            counts.unsupported[name] += 1
        elif flops:
            counts.operators[name][backward] += flops
            if backward:
                counts.backward_flops += flops
            else:
                counts.forward_flops += flops
        if not backward and any(t in self.tainted for t in _tensors((args, kwargs))):
            for t in _tensors(out):
                self.tainted[t] = True
        return out


def _restorable_state(model: nn.Module):
    """Gradients and buffers as they are now, and a function that puts them back."""
    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]

    def restore():
        for p, g in grads:
            p.grad = g
        with torch.no_grad():
            for b, value in buffers:
                b.copy_(value)

    return restore


def measure(model: nn.Module, inputs: tuple, backward: bool = True) -> dict[str, ModuleCounts]:
    """Run ``model(*inputs)`` (and, if ``backward``, a backward pass seeded with ones for every output that
    requires grad) and count what each module does. Keys are qualified module names, ``""`` the root.

    Floating-point input tensors are detached copies that require grad, so the backward computes their
    gradients too; parameter gradients and buffers are restored afterwards.
    """
    names = {module: name for name, module in model.named_modules()}
    counts: dict[str, ModuleCounts] = defaultdict(ModuleCounts)
    stack: list[str] = []
    tainted = WeakIdKeyDictionary()

    def copy(t):
        if not isinstance(t, torch.Tensor):
            return t
        t = t.detach().clone()
        if t.is_floating_point() or t.is_complex():
            t.requires_grad_(True)
        tainted[t] = True
        return t

    inputs = torch.utils._pytree.tree_map(copy, inputs)

    @observer
    def pre_hook(module, args, kwargs):
        _tag_graph(_tensors((args, kwargs)), stack[-1] if stack else "")
        name = names[module]
        stack.append(name)
        in_features = getattr(module, "in_features", None)
        first = _tensors(args[:1])
        if isinstance(in_features, int) and first and first[0].shape[-1:] == (in_features,):
            counts[name].rows += first[0].numel() // in_features

    @observer
    def post_hook(module, args, kwargs, output):
        name = stack.pop()
        _tag_graph(_tensors(output), name)

    def pack(t):
        if torch._C._current_autograd_node() is None and t in tainted:
            counts[stack[-1] if stack else ""].saved_bytes += t.numel() * t.element_size()
        return t

    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True, always_call=True))
    restore = _restorable_state(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.grad = None
        mode = _CountingMode(counts, stack, tainted)
        with torch.enable_grad():
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), mode:
                output = model(*inputs)
            outputs = [t for t in _tensors(output) if t.requires_grad]
            if backward and outputs:
                seeds = [torch.ones_like(t) for t in outputs]
                handles += _watch_gradient_sums(outputs, mode)
                with mode:
                    torch.autograd.backward(outputs, seeds)
    finally:
        for handle in handles:
            handle.remove()
        restore()
    return counts
