"""The contract every structured layer keeps, the registry of layer kinds, and the layers' shared state rules.

State rules (one mechanism here, used by every kind):

* **Derived state follows its source.** Tables computed from a buffer (inverse permutations, gather indices) are
  built by :meth:`StructuredLayer.derived`, cached under the buffer's current state (version counter, storage,
  device, shape, dtype): an in-place edit, a ``.data`` assignment, ``load_state_dict`` or ``.to()`` rebuilds them
  on the next call. Under ``torch.compile`` (and for fake, functorch-wrapped or meta buffers) they are computed in
  the traced program instead, so the compiled graph reads the buffer as it is at each call.
* **Permutation buffers are checked.** A buffer registered with :meth:`~StructuredLayer.register_permutations`
  must be int64 of its shape with every row a permutation; this is checked whenever tables are derived from it
  and, before anything is copied, by ``load_state_dict`` (a failed load leaves the layer as it was).
* **Meta-device construction.** Layers build on the meta device without touching data. After ``to_empty()`` the
  buffers hold uninitialised memory, and using the layer raises until ``reset_parameters()`` (which draws them, in
  the order construction does) or ``load_state_dict()`` fills them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from ..costs import Cost
from ..registry import Registry
from ._checks import check_layer_dtype, check_permutations

__all__ = ["StructuredLayer", "register_layer", "unregister_layer", "layer_class", "available_layers",
           "bookkeeping"]

_LAYERS: Registry[type] = Registry("layer kind")


def register_layer(name: str, *, overwrite: bool = False):
    """Class decorator: make a :class:`StructuredLayer` subclass buildable as ``StructuredLayer.create(name, …)``."""
    add = _LAYERS.register(name, overwrite=overwrite)

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, StructuredLayer)):
            raise TypeError(f"register_layer expects a StructuredLayer subclass, got {cls!r}")
        cls.kind = name
        return add(cls)

    return decorator


def unregister_layer(name: str) -> type:
    """Remove a registered layer kind (e.g. one a test registered) and return its class."""
    return _LAYERS.unregister(name)


def layer_class(kind: str) -> type:
    """The class registered as ``kind`` (``ValueError`` listing the valid kinds if there is none)."""
    return _LAYERS.get(kind)


def available_layers() -> list[str]:
    """The registered layer kinds, sorted."""
    return _LAYERS.names()


def _after_load_state_dict(module, incompatible_keys) -> None:
    """No-op: the load hook of earlier versions, kept so that layers they pickled still unpickle."""


_NO_FUNCTORCH = getattr(torch._C, "_DisableFuncTorch", contextlib.nullcontext)


@contextlib.contextmanager
def bookkeeping():
    """The context in which layers build the tables they cache: plain tensors (never inference-mode ones, which
    autograd could not save later, nor ones wrapped by a ``torch.func`` transform, which would outlive it), no
    autograd history, and hidden from dispatch modes (a FLOP count measures the model's computation, not a
    one-off table build)."""
    with torch.inference_mode(False), torch.no_grad(), _NO_FUNCTORCH(), _disable_current_modes():
        yield


def _traced(tensor: torch.Tensor) -> bool:
    """Whether tables derived from ``tensor`` belong in a traced program rather than a cache: under
    ``torch.compile``, for tensor subclasses (fake tensors), functorch-wrapped tensors and meta tensors."""
    return (
        torch.compiler.is_compiling()
        or type(tensor) not in (torch.Tensor, nn.Parameter)
        or tensor.is_meta
        or torch._C._functorch.is_functorch_wrapped_tensor(tensor)
    )


def _version(tensor: torch.Tensor) -> int | None:
    """The version counter (bumped by every in-place write); ``None`` for inference tensors, which have none."""
    return None if tensor.is_inference() else tensor._version


def _state_key(tensor: torch.Tensor) -> tuple | None:
    """What identifies the values of ``tensor`` without reading them; ``None`` when nothing does."""
    version = _version(tensor)
    if version is None:
        return None
    return version, tensor.data_ptr(), tensor.device, tensor.dtype, tensor.shape, tensor.stride()


def _random_permutations(rows: int, size: int) -> torch.Tensor:
    """``(rows, size)`` int64 on the CPU, each row ``torch.randperm(size)`` from the global generator."""
    if rows == 0:
        return torch.empty(0, size, dtype=torch.int64)
    return torch.stack([torch.randperm(size) for _ in range(rows)])


def _sublayers(module: nn.Module) -> Iterator["StructuredLayer"]:
    """The structured layers nearest below ``module`` (none below another structured layer), in the order they
    were registered, which is the order they were built."""
    for child in module.children():
        if isinstance(child, StructuredLayer):
            yield child
        else:
            yield from _sublayers(child)


class StructuredLayer(nn.Module):
    """Base class of structlin's layers: an ``nn.Module`` mapping ``(..., in_features) → (..., out_features)``.

    Subclasses implement ``forward``, ``reset_parameters``, ``cost`` and (for linear maps) ``to_dense``. A kind
    with random permutations registers them with :meth:`register_permutations`, calls :meth:`prepare_reset` first
    in ``reset_parameters`` and reads every table computed from them through :meth:`derived`.
    """

    kind: str = ""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self._permutation_shapes: dict[str, tuple[int, int]] = {}  # buffer name -> (rows, size)
        self._permutation_draws: dict[str, Callable[[int, int], torch.Tensor]] = {}  # name -> draw, if not random
        self._derived_cache: dict[tuple, tuple] = {}  # (buffer name, build) -> (state key, storage, tables)
        self._garbage: dict[str, tuple] = {}  # buffer name -> (tensor, version, data_ptr) of uninitialised memory
        self._fresh = False  # materialised from the meta device and not reset since

    @classmethod
    def create(cls, kind: str, in_features: int, out_features: int, **options) -> "StructuredLayer":
        """Build a registered layer kind by name, e.g. ``StructuredLayer.create("acdc", 512, 512, depth=4)``."""
        return _LAYERS.get(kind)(in_features, out_features, **options)

    @classmethod
    def factory_kwargs(cls, device=None, dtype=None) -> dict:
        """``{"device": device, "dtype": dtype}`` for building the layer's tensors, after checking that ``dtype`` is
        a supported floating-point dtype (``TypeError`` naming them otherwise)."""
        check_layer_dtype(cls.__name__, dtype)
        return {"device": device, "dtype": dtype}

    #: True when :meth:`from_linear` reproduces any ``nn.Linear`` exactly (the swapped model keeps its function).
    exact_from_linear: bool = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options) -> "StructuredLayer":
        """A layer of this kind built from ``linear``'s weight and bias (exactly when ``exact_from_linear``)."""
        raise TypeError(f"{cls.__name__} cannot be built from an nn.Linear's weights")

    def reset_parameters(self) -> None:
        """Draw the parameters again with the layer's init strategy. Permutation buffers keep their values once
        drawn; they are drawn here only when they hold none (at construction, or after ``to_empty()``)."""
        raise NotImplementedError

    def cost(self, batch_shape: Sequence[int] | int = ()) -> Cost:
        """Analytic :class:`~structlin.Cost` of one forward (and backward) pass on inputs ``(*batch_shape, in)``."""
        raise NotImplementedError

    def to_dense(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` weight ``W`` with ``forward(x) == x @ W.T + dense_bias()``."""
        raise TypeError(f"{type(self).__name__} is not a linear map, so it has no dense weight")

    def dense_bias(self) -> torch.Tensor:
        """The ``(out_features,)`` vector ``b`` with ``forward(x) == x @ to_dense().T + b``: the layer's ``bias``
        (zeros without one) unless a kind adds more. Computed without gradients. ``TypeError`` for a layer that
        is not a linear map (found by calling :meth:`to_dense`, which kinds may spare themselves by overriding)."""
        self.to_dense()
        bias = getattr(self, "bias", None)
        if isinstance(bias, torch.Tensor):
            return bias.detach().clone()
        reference = next(self.parameters(), None)
        factory = {} if reference is None else {"dtype": reference.dtype, "device": reference.device}
        return torch.zeros(self.out_features, **factory)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def _check_input(self, x: torch.Tensor) -> None:
        if self._garbage:
            self._check_initialised()
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (..., {self.in_features}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point input, got {x.dtype}")

    @staticmethod
    def _rows(batch_shape: Sequence[int] | int) -> int:
        return batch_shape if isinstance(batch_shape, int) else math.prod(batch_shape)

    # ------------------------------------------------------------------------------------ random permutations
    def register_permutations(self, name: str, rows: int, size: int, device=None,
                              draw: Callable[[int, int], torch.Tensor] | None = None) -> None:
        """Register the buffer ``name``: ``(rows, size)`` int64, each row a permutation of ``0 … size − 1``, kept
        in the ``state_dict``. It holds no values until :meth:`prepare_reset` draws it (each row
        ``torch.randperm(size)`` from torch's global generator, or ``draw(rows, size)`` when given, which must
        be a picklable function); checked on load and by :meth:`derived`."""
        self.register_buffer(name, torch.empty(rows, size, dtype=torch.int64, device=device))
        self._permutation_shapes[name] = (rows, size)
        if draw is not None:
            self._permutation_draws[name] = draw
        self._mark_garbage(name)

    def prepare_reset(self) -> None:
        """The first step of a kind's ``reset_parameters``.

        After materialisation from the meta device (``to_empty``), it first resets the structured sub-layers in
        the order they were built, as construction did before the layer's own reset: so ``torch.manual_seed(s)``
        then ``reset_parameters()`` gives the layer that ``torch.manual_seed(s)`` then construction gives. Then it
        draws the permutation buffers that hold no values yet; drawn ones keep theirs.
        """
        if self._fresh:
            for layer in _sublayers(self):
                if getattr(layer, "_fresh", False):
                    layer.reset_parameters()
            self._fresh = False
        for name, (rows, size) in self._permutation_shapes.items():
            buffer = self._buffers[name]
            if not buffer.is_meta and self._holds_garbage(name):
                with torch.no_grad():
                    buffer.copy_(self._permutation_draws.get(name, _random_permutations)(rows, size))
                self._garbage.pop(name, None)

    # ------------------------------------------------------------------------------------ derived state
    def derived(self, name: str, build: Callable[[torch.Tensor], object]):
        """``build(buffer)`` for the buffer ``name``, computed again only when the buffer's state changed.

        Before building, the buffer is checked (it must hold values, and a permutation buffer valid ones:
        ``ValueError`` naming it otherwise). ``build`` runs under :func:`bookkeeping`; under ``torch.compile`` it
        runs in the traced program on every call, unchecked, as it does for fake, functorch-wrapped and meta
        buffers.
        """
        buffer = self._buffers[name]
        if _traced(buffer):
            return build(buffer)
        key, slot = _state_key(buffer), (name, getattr(build, "__func__", build))
        entry = self._derived_cache.get(slot)
        if key is not None and entry is not None and entry[0] == key:
            return entry[2]
        with bookkeeping():
            self._check_initialised()
            self._check_buffer(name, buffer, f"{type(self).__name__}'s buffer {name!r}")
            value = build(buffer)
        if key is not None:  # the storage is kept so that its address cannot be reused by another buffer
            self._derived_cache[slot] = (key, buffer.untyped_storage(), value)
        return value

    def _check_buffer(self, name: str, value, what: str) -> None:
        """Whether ``value`` may be the buffer ``name``; ``ValueError`` starting with ``what`` otherwise."""
        if name in self._permutation_shapes:
            check_permutations(value, self._permutation_shapes[name], what)

    # ------------------------------------------------------------------------------------ uninitialised memory
    def _mark_garbage(self, name: str) -> None:
        """Record that buffer ``name`` holds uninitialised memory (until it is written or replaced)."""
        buffer = self._buffers.get(name)
        if buffer is not None and not buffer.is_meta:
            self._garbage[name] = (buffer, _version(buffer), buffer.data_ptr())

    def _holds_garbage(self, name: str) -> bool:
        """Whether buffer ``name`` is still the uninitialised memory recorded by :meth:`_mark_garbage`."""
        record = self._garbage.get(name)
        if record is None:
            return False
        tensor, version, pointer = record
        buffer = self._buffers.get(name)
        if buffer is tensor and _version(buffer) == version and buffer.data_ptr() == pointer:
            return True
        del self._garbage[name]
        return False

    def _check_initialised(self) -> None:
        for name in list(self._garbage):
            if self._holds_garbage(name):
                raise RuntimeError(
                    f"{type(self).__name__}'s buffer {name!r} holds uninitialised memory (the layer was built on the "
                    "meta device and materialised with to_empty()); call reset_parameters() or load_state_dict() "
                    "before using the layer"
                )

    # ------------------------------------------------------------------------------------ nn.Module hooks
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # check this layer's and its structured sub-layers' incoming values before anything of them is copied
        for path, module in self.named_modules(prefix=prefix[:-1]):
            if isinstance(module, StructuredLayer):
                module._check_incoming(state_dict, f"{path}." if path else "")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _check_incoming(self, state_dict: dict, prefix: str) -> None:
        for name in self._permutation_shapes:
            key = prefix + name
            if key in state_dict:
                self._check_buffer(name, state_dict[key], f"state_dict[{key!r}] for {type(self).__name__}")

    def _holds_meta(self, recurse: bool) -> bool:
        tensors = itertools.chain(self.parameters(recurse=recurse), self.buffers(recurse=recurse))
        return any(t.is_meta for t in tensors)

    def _apply(self, fn, recurse=True):
        # to_empty() moves tensors off the meta device with uninitialised memory: record which buffers hold it
        was_meta = self._holds_meta(recurse)
        meta_buffers = [name for name, b in self._buffers.items() if b is not None and b.is_meta]
        garbage = [name for name in list(self._garbage) if self._holds_garbage(name)]
        result = super()._apply(fn, recurse)
        if was_meta and not self._holds_meta(recurse):
            self._fresh = True
        materialised = [name for name in meta_buffers if self._buffers.get(name) is not None]
        for name in (*garbage, *materialised):
            self._mark_garbage(name)
        return result

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_derived_cache"] = {}
        state["_garbage"] = [name for name in list(self._garbage) if self._holds_garbage(name)]
        return state

    def __setstate__(self, state):
        garbage = state.pop("_garbage", [])
        super().__setstate__(state)
        self._derived_cache = {}
        self._garbage = {}
        self.__dict__.setdefault("_permutation_shapes", {})
        self.__dict__.setdefault("_permutation_draws", {})
        self.__dict__.setdefault("_fresh", False)
        for name in garbage:
            self._mark_garbage(name)
