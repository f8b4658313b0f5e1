"""Training helpers for models that contain structlin layers."""

from __future__ import annotations

from torch import nn

__all__ = ["param_groups"]


def param_groups(model: nn.Module, *, quadratic_lr_scale: float = 0.1, lr: float = 1e-3, **group_options) -> list[dict]:
    """Optimizer parameter groups giving quadratic parameters their own learning rate ``lr · quadratic_lr_scale``.

    The ReLinear remedy for unstable quadratic training: the parameters every quadratic layer lists in
    ``quadratic_parameters()`` (for :class:`~structlin.Quadratic` and the quadratic convolutions
    :class:`~structlin.QuadraticConv1d`/``2d``/``3d``, all but the first-order part) train with the scaled rate;
    everything else with ``lr`` (default ``1e-3``, Adam's default). Both groups set their own rate, which
    overrides the optimizer's ``lr`` argument: pass the base rate here. Parameters with ``requires_grad=False``
    are left out; each parameter appears once. ``group_options`` (e.g. ``weight_decay``) go into both groups.

    >>> optimizer = torch.optim.Adam(param_groups(model, lr=1e-3, quadratic_lr_scale=0.1))
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not quadratic_lr_scale > 0:
        raise ValueError(f"quadratic_lr_scale must be > 0, got {quadratic_lr_scale!r}")
    quadratic: dict[int, nn.Parameter] = {}
    for module in model.modules():
        listed = getattr(module, "quadratic_parameters", None)
        if callable(listed):
            quadratic.update((id(p), p) for p in listed() if p.requires_grad)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in quadratic]
    groups = [{"params": rest, "lr": lr, **group_options}]
    if quadratic:
        groups.append({"params": list(quadratic.values()), "lr": lr * quadratic_lr_scale, **group_options})
    return groups
