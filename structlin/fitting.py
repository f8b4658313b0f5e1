"""Fit a structured layer to a dense linear map: least squares on the matrix or on calibration inputs.

Both targets are the same problem, ``min_θ ‖f_θ(X) − (X Wᵀ + b)‖²_F`` over inputs ``X`` ``(rows, in)``:

- on the matrix (no calibration data) ``X = [I; 0]``, the identity followed by one zero row, so ``f_θ(X)`` holds
  ``W_θᵀ + b_θ`` then ``b_θ``. The fit compares the rows minus the last (``W_θᵀ``) with ``Wᵀ`` and the last row
  with ``b``: for a layer that is an affine map the loss is ``(‖W_θ − W‖²_F + ‖b_θ − b‖²) / (‖W‖²_F + ‖b‖²)``,
  which is also the expected relative squared error on standard normal inputs (so the fit's error and the error
  :func:`relative_error` measures on :func:`random_inputs` agree up to sampling), and the layer is
  differentiable in it even though ``to_dense()`` is not;
- on calibration inputs, ``X`` is what the dense layer saw;
- a layer that is not a linear map (``to_dense()`` raises ``TypeError``) and has no calibration data is fitted
  on standard normal inputs drawn from a fixed seed.

The fit runs L-BFGS (strong Wolfe line search) on a copy of the layer in float64 when the layer is float64 and in
float32 otherwise, and casts the fitted parameters back into the layer in place. It stops at the first of:

- ``"converged"``: L-BFGS found no further step (its gradient or change tolerances), or the error reached ``target``;
- ``"stalled"``: the last ``patience`` iterations lowered the relative error by less than the fraction ``stall``
  of it (a fit can cross a plateau of a few windows before it falls again, hence the patience);
- ``"iterations"``: ``max_iter`` iterations;
- ``"time"``: ``max_time`` seconds (checked every ``window`` iterations, so it can run over by one window).

Without a time limit the fit is deterministic for a given starting layer (on one machine and thread count).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["fit_layer", "fit", "FitResult", "FitProgress", "relative_error", "random_inputs", "is_linear_map"]

STOPS = ("converged", "stalled", "iterations", "time")
#: elements of the fit's outputs per CPU thread when :func:`fit` chooses the thread count
ELEMENTS_PER_THREAD = 1 << 21


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


@dataclass(frozen=True)
class FitProgress:
    """Where a running fit stands, passed to the ``callback`` of :func:`fit` after every window of iterations.

    Attributes:
        iteration: L-BFGS iterations so far. evaluations: forward/backward passes so far.
        relative_error: ``‖f(X) − t‖ / ‖t‖`` on the fitting inputs now.
        elapsed: seconds since the fit started.
        stop: ``None`` while the fit goes on; in the last call, why it stopped (see the module docstring).
    """

    iteration: int
    evaluations: int
    relative_error: float
    elapsed: float
    stop: str | None = None


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did: ``start_error`` and ``relative_error`` (on the fitting inputs, before and after),
    ``iterations``, ``evaluations``, ``seconds`` and ``stop`` (``"converged"``, ``"stalled"``, ``"iterations"``,
    ``"time"``, or ``"nothing to fit"`` for a layer without trainable parameters)."""

    start_error: float
    relative_error: float
    iterations: int
    evaluations: int
    seconds: float
    stop: str

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class _Problem:
    """Inputs ``x``, and how a layer's outputs on them compare with the target: ``loss(out) = ‖view(out) − target‖² /
    ‖target‖²`` (``view`` takes the weight rows apart from the bias row in the matrix problem)."""

    def __init__(self, layer: nn.Module, linear: nn.Linear, inputs: torch.Tensor | None):
        n_in = linear.in_features
        weight = linear.weight.detach().to(torch.float64)
        bias = None if linear.bias is None else linear.bias.detach().to(device=weight.device, dtype=torch.float64)
        self.matrix = inputs is None and is_linear_map(layer)
        if self.matrix:
            self.x = torch.cat([torch.eye(n_in, dtype=torch.float64), torch.zeros(1, n_in, dtype=torch.float64)])
            zero = torch.zeros(1, weight.shape[0], dtype=torch.float64, device=weight.device)
            self.target = torch.cat([weight.T, zero if bias is None else bias[None]])
        else:
            self.x = (random_inputs(n_in, rows=max(256, 2 * n_in), dtype=torch.float64) if inputs is None
                      else _flat(inputs, n_in).detach().to(torch.float64))
            self.target = nn.functional.linear(self.x.to(weight.device), weight, bias)
        self.scale = self.target.square().sum().clamp_min(torch.finfo(torch.float64).tiny)

    def to(self, device, dtype) -> "_Problem":
        self.x, self.target = self.x.to(device=device, dtype=dtype), self.target.to(device=device, dtype=dtype)
        self.scale = self.scale.to(device=device, dtype=dtype)
        return self

    def view(self, out: torch.Tensor) -> torch.Tensor:
        return torch.cat([out[:-1] - out[-1:], out[-1:]]) if self.matrix else out

    def loss(self, layer: nn.Module) -> torch.Tensor:
        return (self.view(layer(self.x)) - self.target).square().sum() / self.scale


def _check_positive(name: str, value, *, allow_none: bool = False, integer: bool = False) -> None:
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0 or not math.isfinite(value):
        what = "a positive int" if integer else "a positive number"
        raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, got {value!r}")


def check_stall(value, name: str = "stall") -> None:
    """``ValueError`` unless ``value`` is a number in ``[0, 1)`` (a stall threshold)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def fit(
    layer: nn.Module,
    linear: nn.Linear,
    inputs: torch.Tensor | None = None,
    *,
    max_iter: int = 500,
    stall: float = 1e-2,
    patience: int = 30,
    window: int = 10,
    max_time: float | None = None,
    target: float = 0.0,
    tolerance: float = 1e-24,
    callback: Callable[[FitProgress], None] | None = None,
    threads: int | None = None,
) -> FitResult:
    r"""Fit ``layer``'s parameters in place so that ``layer(x) ≈ linear(x)``; returns a :class:`FitResult`.

    Args:
        layer: any module ``(..., in) → (..., out)`` with the linear's shape; its current parameters are the start.
        linear: the dense layer to imitate (not changed): anything with ``weight`` ``(out, in)``, ``bias`` and
            ``in_features``.
        inputs: calibration inputs ``(..., in_features)``, or ``None`` to fit the matrix itself (see the module
            docstring; a layer that is not a linear map is then fitted on :func:`random_inputs`).
        max_iter: L-BFGS iterations at most.
        stall: stop when ``patience`` iterations lower the relative error by less than this fraction of it
            (``0`` never stops for a stall).
        patience: iterations over which ``stall`` is measured (rounded up to whole windows).
        window: iterations between the stall and time checks (and the ``callback`` calls).
        max_time: seconds; ``None`` for no limit.
        target: stop once the relative error is at most this.
        tolerance: L-BFGS's ``tolerance_change`` on the relative squared error.
        callback: called with a :class:`FitProgress` after every window and once more when the fit stops.
        threads: CPU threads while fitting (torch's setting is restored afterwards). ``None``: one per
            :data:`ELEMENTS_PER_THREAD` elements of the fit's outputs, at least 1 and at most
            ``torch.get_num_threads()``. A fit is many small operations; with more threads than that, each one
            waits at thread barriers, and on a busy machine those waits dominate (the 8 FFN layers of a 4-layer
            BERT, 256↔1024, fitted in 7 s on one thread and in 58 s on two, on a 2-core machine running other work).

    Buffers (e.g. ACDC's permutations) are not fitted: they stay what the layer was built with.
    """
    _check_positive("max_iter", max_iter, integer=True)
    _check_positive("window", window, integer=True)
    _check_positive("patience", patience, integer=True)
    _check_positive("max_time", max_time, allow_none=True)
    check_stall(stall)
    started = time.perf_counter()
    params = [p for p in layer.parameters() if p.requires_grad]
    if not params:
        error = relative_error(layer, linear, inputs)
        return FitResult(error, error, 0, 0, time.perf_counter() - started, "nothing to fit")
    dtype = torch.float64 if params[0].dtype == torch.float64 else torch.float32
    problem = _Problem(layer, linear, inputs).to(params[0].device, dtype)

    if threads is None:
        elements = problem.x.shape[0] * max(linear.in_features, problem.target.shape[1])
        threads = min(max(1, elements // ELEMENTS_PER_THREAD), torch.get_num_threads())
    _check_positive("threads", threads, integer=True)
    work = copy.deepcopy(layer).to(dtype)
    work.train(layer.training)
    with _threads(threads):
        with torch.no_grad():
            start_error = math.sqrt(max(float(problem.loss(work)), 0.0))
        error, iterations, evaluations, stop = _lbfgs(
            work, problem, max_iter=max_iter, stall=stall, windows=-(-patience // window), window=window,
            max_time=max_time, target=target, tolerance=tolerance, callback=callback, started=started,
            error=start_error)
    with torch.no_grad():
        for dst, src in zip(params, (p for p in work.parameters() if p.requires_grad)):
            dst.copy_(src)
    return FitResult(start_error, error, iterations, evaluations, time.perf_counter() - started, stop)


@contextlib.contextmanager
def _threads(count: int):
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != previous:
            torch.set_num_threads(previous)


def _lbfgs(work: nn.Module, problem: _Problem, *, max_iter, stall, windows, window, max_time, target, tolerance,
           callback, started, error) -> tuple[float, int, int, str]:
    """The fit's loop from relative error ``error`` (see :func:`fit`): ``(relative error, iterations, evaluations,
    stop)``."""
    work_params = [p for p in work.parameters() if p.requires_grad]
    # each step runs one window of iterations; the evaluation cap is far above what a window's line searches need,
    # so a step that ends early has met L-BFGS's own tolerances
    max_eval = 25 * window
    optimizer = torch.optim.LBFGS(work_params, lr=1.0, max_iter=window, max_eval=max_eval, history_size=50,
                                  tolerance_grad=1e-15, tolerance_change=tolerance, line_search_fn="strong_wolfe")
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        loss = problem.loss(work)
        loss.backward()
        return loss

    def current_error() -> float:
        with torch.no_grad():
            return math.sqrt(max(float(problem.loss(work)), 0.0))

    iterations, stop = 0, None
    history = [error]  # the error at the end of each window, the start first
    while stop is None:
        evaluated, planned = evaluations, optimizer.param_groups[0]["max_iter"]
        optimizer.step(closure)
        done = optimizer.state[work_params[0]]["n_iter"]
        stepped, iterations = done - iterations, done
        error = current_error()
        history.append(error)
        before = history[max(0, len(history) - 1 - windows)]
        elapsed = time.perf_counter() - started
        if not math.isfinite(error):
            raise FloatingPointError(f"the fit diverged (relative error {error}) after {iterations} iterations")
        if error <= target or (stepped < planned and evaluations - evaluated < max_eval):
            stop = "converged"
        elif before - error < stall * before:
            stop = "stalled"
        elif iterations >= max_iter:
            stop = "iterations"
        elif max_time is not None and elapsed >= max_time:
            stop = "time"
        if callback is not None:
            callback(FitProgress(iterations, evaluations, error, elapsed, stop))
        optimizer.param_groups[0]["max_iter"] = min(window, max_iter - iterations)
    return error, iterations, evaluations, stop


def fit_layer(
    layer: nn.Module,
    linear: nn.Linear,
    inputs: torch.Tensor | None = None,
    *,
    max_iter: int = 500,
    tolerance: float = 1e-24,
    **options,
) -> nn.Module:
    """:func:`fit` that returns ``layer`` (fitted in place); ``options`` are :func:`fit`'s other keywords."""
    fit(layer, linear, inputs, max_iter=max_iter, tolerance=tolerance, **options)
    return layer
