"""The convolutional layers of a layer kind: which class replaces an ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` when
:func:`structlin.swap` converts a model to that kind.

A convolutional layer class registered here takes ``nn.Conv*``'s arguments (``in_channels, out_channels,
kernel_size, stride, padding, dilation, groups, bias, padding_mode``) plus its own options, and has a classmethod
``from_conv(conv, **options)``; ``exact_from_conv = True`` says that it reproduces the conv exactly.
"""

from __future__ import annotations

__all__ = ["register_conv_layer", "conv_layer_class", "conv_layer_kinds"]

_CONV_LAYERS: dict[str, dict[int, type]] = {}


def register_conv_layer(kind: str, dims: int, *, overwrite: bool = False):
    """Class decorator: the layer kind ``kind``'s replacement for ``nn.Conv{dims}d``."""
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"a layer kind must be a non-empty string, got {kind!r}")
    if dims not in (1, 2, 3):
        raise ValueError(f"dims must be 1, 2 or 3, got {dims!r}")

    def decorator(cls: type) -> type:
        classes = _CONV_LAYERS.setdefault(kind, {})
        if dims in classes and not overwrite:
            raise ValueError(f"kind {kind!r} already has a {dims}-d convolutional layer ({classes[dims].__name__}); "
                             "pass overwrite=True to replace it")
        if not callable(getattr(cls, "from_conv", None)):
            raise TypeError(f"{cls!r} has no from_conv(conv, **options) classmethod")
        classes[dims] = cls
        return cls

    return decorator


def conv_layer_class(kind: str, dims: int) -> type | None:
    """The class of kind ``kind`` that replaces ``nn.Conv{dims}d``, or ``None`` when it has none."""
    return _CONV_LAYERS.get(kind, {}).get(dims)


def conv_layer_kinds() -> dict[str, list[int]]:
    """Kind → the spatial dims it has convolutional layers for."""
    return {kind: sorted(classes) for kind, classes in sorted(_CONV_LAYERS.items())}
