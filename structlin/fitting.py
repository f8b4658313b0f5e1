"""Fit a structured layer to a dense ``nn.Linear``: least squares on the matrix or on calibration inputs.

Both targets are the same problem, ``min_θ ‖f_θ(X) − (X Wᵀ + b)‖²_F`` over inputs ``X`` ``(rows, in)``:

- on the matrix (no calibration data) ``X = [I; 0]``, the identity followed by one zero row, so ``f_θ(X)`` holds
  ``W_θᵀ + b_θ`` then ``b_θ``: for a layer that is an affine map this is the Frobenius error of its weight and
  bias, and the layer is differentiable in it even though ``to_dense()`` is not;
- on calibration inputs, ``X`` is what the dense layer saw;
- a layer that is not a linear map (``to_dense()`` raises ``TypeError``) and has no calibration data is fitted
  on standard normal inputs drawn from a fixed seed.

The fit runs on a float64 copy of the layer with L-BFGS (strong Wolfe line search, fixed iteration budget), so it
is deterministic for a given starting layer; the fitted parameters are cast back into the layer in place.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fit_layer", "relative_error", "random_inputs", "is_linear_map"]


def random_inputs(in_features: int, rows: int = 256, *, seed: int = 0, device=None, dtype=None) -> torch.Tensor:
    """``(rows, in_features)`` standard normal inputs from a private generator (torch's global RNG is untouched)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, in_features, generator=generator, dtype=torch.float64)
    return x.to(device=device, dtype=dtype or torch.get_default_dtype())


def is_linear_map(layer: nn.Module) -> bool:
    """Whether ``layer`` declares itself an affine map (its ``to_dense()`` does not raise ``TypeError``)."""
    to_dense = getattr(layer, "to_dense", None)
    if to_dense is None:
        return False
    try:
        to_dense()
    except TypeError:
        return False
    return True


def _flat(x: torch.Tensor, in_features: int) -> torch.Tensor:
    if x.shape[-1] != in_features:
        raise ValueError(f"calibration inputs must have shape (..., {in_features}), got {tuple(x.shape)}")
    return x.reshape(-1, in_features)


@torch.no_grad()
def relative_error(layer: nn.Module, linear: nn.Linear, inputs: torch.Tensor | None = None) -> float:
    r"""``‖layer(X) − linear(X)‖_F / ‖linear(X)‖_F`` with both modules as they are (dtype, device).

    ``inputs`` ``(..., in_features)``; by default :func:`random_inputs`. ``layer`` runs in eval mode and is put
    back in the mode it had; the reference is ``F.linear`` with the Linear's weight and bias (its hooks do not run).
    """
    weight = linear.weight
    x = random_inputs(linear.in_features) if inputs is None else _flat(inputs, linear.in_features)
    x = x.to(device=weight.device, dtype=weight.dtype)
    reference = nn.functional.linear(x, weight, linear.bias).double()
    mode = layer.training
    layer.eval()
    try:
        error = (layer(x).double() - reference).norm() / reference.norm().clamp_min(torch.finfo(torch.float64).tiny)
    finally:
        layer.train(mode)
    return float(error)


def fit_layer(
    layer: nn.Module,
    linear: nn.Linear,
    inputs: torch.Tensor | None = None,
    *,
    max_iter: int = 500,
    tolerance: float = 1e-24,
) -> nn.Module:
    r"""Fit ``layer``'s parameters in place so that ``layer(x) ≈ linear(x)``; returns ``layer``.

    Args:
        layer: any module ``(..., in) → (..., out)`` with the linear's shape; its current parameters are the start.
        linear: the dense layer to imitate (not changed).
        inputs: calibration inputs ``(..., in_features)``, or ``None`` to fit the matrix itself (see the module
            docstring; a layer that is not a linear map is then fitted on :func:`random_inputs`).
        max_iter: L-BFGS iterations (function evaluations are capped at 1.25× that).
        tolerance: stop when the relative squared error ``‖f(X) − t‖² / ‖t‖²`` changes by less than this.

    Buffers (e.g. ACDC's permutations) are not fitted: they stay what the layer was built with.
    """
    n_in = linear.in_features
    if inputs is not None:
        x = _flat(inputs, n_in).detach().to(torch.float64)
    elif is_linear_map(layer):
        x = torch.cat([torch.eye(n_in, dtype=torch.float64), torch.zeros(1, n_in, dtype=torch.float64)])
    else:
        x = random_inputs(n_in, rows=max(256, 2 * n_in), dtype=torch.float64)
    params = [p for p in layer.parameters() if p.requires_grad]
    if not params:
        return layer
    device = params[0].device
    x = x.to(device)
    with torch.no_grad():
        weight = linear.weight.detach().to(device=device, dtype=torch.float64)
        target = x @ weight.T
        if linear.bias is not None:
            target = target + linear.bias.detach().to(device=device, dtype=torch.float64)
        scale = target.square().sum().clamp_min(torch.finfo(torch.float64).tiny)

    work = copy.deepcopy(layer).to(torch.float64)
    work.train(layer.training)
    work_params = [p for p in work.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(
        work_params,
        lr=1.0,
        max_iter=max_iter,
        history_size=50,
        tolerance_grad=1e-15,
        tolerance_change=tolerance,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (work(x) - target).square().sum() / scale
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        for dst, src in zip(params, work_params):
            dst.copy_(src)
    return layer
