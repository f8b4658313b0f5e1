"""FLOP formulas of the arithmetic ops: pointwise, reductions, matmuls, scatter-adds and FFTs.

Each formula takes a :class:`~._call.Call` and returns FLOPs, or ``None`` for "no formula for these arguments"
(e.g. a complex ``exp``). :data:`FORMULAS` maps ``aten`` op names to them; ``_ops.py`` turns it into the
registry. The conventions are those of ``docs/report.md``:

* pointwise: 1 FLOP per output element per op (an activation or its backward is one op, a comparison too), 2 for
  the fused ``addcmul``/``addcdiv``/``lerp`` and for ``glu`` (a sigmoid and a product) and its backward;
  complex outputs: add/sub/neg 2, real×complex multiply 2, complex×complex 6, complex÷real 2, complex÷complex
  11, conjugation 1;
* reductions: ``inputs − outputs`` adds or comparisons (2 per complex add), ``mean`` 1 more per output for
  the division; cumulative sums and products ``inputs − lines``; variance 4 per input element (the mean's add,
  the centring, the square and its add; the two divisions per output fold in), standard deviation 1 more per
  output for the root; vector norms 2 per input element (``|x|^p`` and its add; the root per output folds in);
  ``logsumexp`` 4 per input element (max, subtraction, ``exp``, add);
* sorting and selection: a sort ``n·⌈log₂ n⌉`` comparisons per line of ``n``, ``topk`` ``n − 1 + (k − 1)·⌈log₂
  n⌉``; ``histc`` 2 per input element;
* matmuls: a multiply-add is 2 FLOPs (``mm`` ``2·m·k·n``, ``_grouped_mm`` the same per group); ``addmm``/
  ``baddbmm``/``addmv`` add one FLOP per output element for the bias add;
* ``index_add``/``scatter_add``/accumulating ``index_put``: one add per source element;
* FFTs: ``5·n·log₂n`` per complex transform of length ``n``, half for a real-input (``_fft_r2c``) or
  real-output (``_fft_c2r``) transform, per transformed line and dimension; the normalization folded into the
  transform is not counted separately (as FFTW's benchmark convention does not).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..costs import fft_flops, rfft_flops
from ._call import Call, numel

__all__ = ["FORMULAS"]

# Pointwise ops: FLOPs per real output element.
_POINTWISE_NAMES = """
add sub rsub mul div neg abs exp exp2 expm1 log log2 log10 log1p sqrt rsqrt pow reciprocal sign sgn square
relu relu6 gelu gelu_backward threshold threshold_backward silu silu_backward sigmoid sigmoid_backward tanh
tanh_backward sin cos tan asin acos atan atan2 sinh cosh erf erfc erfinv clamp clamp_min clamp_max maximum
minimum fmax fmin leaky_relu leaky_relu_backward elu elu_backward softplus softplus_backward hardtanh
hardtanh_backward hardsigmoid hardsigmoid_backward hardswish hardswish_backward mish mish_backward
log_sigmoid_forward log_sigmoid_backward celu selu floor ceil round trunc frac remainder fmod xlogy
logit logit_backward native_dropout native_dropout_backward eq ne gt ge lt le logical_not logical_and logical_or
logical_xor isnan isinf nan_to_num hardshrink hardshrink_backward softshrink softshrink_backward
rrelu_with_noise rrelu_with_noise_backward _prelu_kernel _prelu_kernel_backward logaddexp logaddexp2 hypot
copysign heaviside
""".split()
_POINTWISE_FACTOR = {name: 1 for name in _POINTWISE_NAMES}
_POINTWISE_FACTOR.update(addcmul=2, addcdiv=2, lerp=2, glu=2, glu_backward=2)

# Complex outputs: FLOPs per complex output element, by op and by whether both operands are complex.
_COMPLEX_FACTOR = {"add": 2, "sub": 2, "neg": 2, "rsub": 2}


def _is_complex(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_complex()


def _complex_factor(name: str, args) -> int | None:
    if name in _COMPLEX_FACTOR:
        return _COMPLEX_FACTOR[name]
    if name in ("mul", "div"):
        both = _is_complex(args[0]) and _is_complex(args[1]) if len(args) > 1 else False
        return (6 if name == "mul" else 11) if both else 2
    if name == "addcmul":  # value · t1 · t2 + self
        both = _is_complex(args[1]) and _is_complex(args[2])
        return (6 if both else 2) + 2
    return None


def _pointwise(name: str) -> Callable:
    def formula(call: Call):
        outs = call.outputs
        if any(t.is_complex() for t in outs):
            factor = _complex_factor(name, call.args)
            if factor is None:
                return None
        else:
            factor = _POINTWISE_FACTOR[name]
        return factor * sum(t.numel() for t in outs)

    return formula


def _conj_physical(call: Call):
    return call.out_numel if _is_complex(call.args[0]) else 0


def _first_output_numel(call: Call) -> int:
    return call.outputs[0].numel()  # max/min with dim and var_mean also return a second tensor


def _reduction(extra_per_output: int = 0) -> Callable:
    def formula(call: Call):
        args = call.args
        if len(args) > 1 and isinstance(args[1], torch.Tensor):  # max.other, min.other: elementwise
            return call.out_numel
        inputs, outputs = numel(args[0]), _first_output_numel(call)
        factor = 2 if args[0].is_complex() else 1  # a complex add is two real adds
        return factor * (max(inputs - outputs, 0) + extra_per_output * outputs)

    return formula


def _cumulative(call: Call):
    """``cumsum``/``cumprod``/``cummax``/``cummin``: one add (product, comparison) per element but the first of
    each line."""
    x = call.args[0]
    if x.dim() == 0:
        return 0
    return x.numel() - x.numel() // max(x.shape[call["dim"]], 1)


def _variance(per_output: int) -> Callable:
    def formula(call: Call):
        return 4 * numel(call.args[0]) + per_output * _first_output_numel(call)

    return formula


def _per_input(factor: int) -> Callable:
    def formula(call: Call):
        return factor * numel(call.args[0])

    return formula


def _lines(x: torch.Tensor, dim: int) -> tuple[int, int]:
    """``(lines, length)`` of ``x`` along ``dim``: a 0-d tensor is one line of length 1."""
    n = x.shape[dim] if x.dim() else 1
    return (x.numel() // n if n else 0), n


def _sort(call: Call):
    """A comparison sort: ``n·⌈log₂ n⌉`` comparisons per line of ``n``."""
    lines, n = _lines(call["self"], call["dim"])
    return lines * n * math.ceil(math.log2(n)) if n > 1 else 0


def _topk(call: Call):
    """A tournament: the largest of ``n`` in ``n − 1`` comparisons, each of the next ``k − 1`` in ``⌈log₂ n⌉``
    more, per line."""
    lines, n = _lines(call["self"], call["dim"])
    k = call["k"]
    return lines * (n - 1 + max(k - 1, 0) * math.ceil(math.log2(n))) if n > 1 else 0


def _histc(call: Call):
    """2 per input element: finding its bin (a scaled subtraction) and counting it there."""
    return 2 * call["self"].numel()


def _mm(call: Call):
    (m, k), n = call.args[0].shape, call.args[1].shape[-1]
    return 2 * m * k * n


def _addmm(call: Call):
    (m, k), n = call.args[1].shape, call.args[2].shape[-1]
    return 2 * m * k * n + call.out.numel()


def _bmm(call: Call):
    b, m, k = call.args[0].shape
    return 2 * b * m * k * call.args[1].shape[-1]


def _baddbmm(call: Call):
    b, m, k = call.args[1].shape
    return 2 * b * m * k * call.args[2].shape[-1] + call.out.numel()


def _mv(call: Call):
    m, k = call.args[0].shape
    return 2 * m * k


def _addmv(call: Call):
    m, k = call.args[1].shape
    return 2 * m * k + call.out.numel()


def _grouped_mm(call: Call):
    """Groups of matmuls in one call (mixture-of-experts layers): ``2·m·k·n`` per group, over the rows, columns
    or contraction that ``offs`` assigns to groups (up to its last offset), + the bias add."""
    a, b, offs = call["self"], call["mat2"], call["offs"]
    covered = int(offs[-1]) if offs is not None and offs.numel() else None
    if a.dim() == 3 and b.dim() == 3:  # (G, m, k) @ (G, k, n)
        flops = 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    elif a.dim() == 2 and b.dim() == 3:  # rows of a in groups, each times its (k, n) matrix
        flops = 2 * (a.shape[0] if covered is None else covered) * a.shape[1] * b.shape[2]
    elif a.dim() == 3 and b.dim() == 2:  # columns of b in groups
        flops = 2 * a.shape[1] * a.shape[2] * (b.shape[1] if covered is None else covered)
    else:  # 2-D × 2-D: the contraction in groups, one (m, n) output each
        flops = 2 * a.shape[0] * (a.shape[1] if covered is None else covered) * b.shape[1]
    return flops + (call.out.numel() if call["bias"] is not None else 0)


def _dot(call: Call):
    return 2 * call.args[0].numel()


def _scatter_add(call: Call):
    """``index_add``/``scatter_add``: one add per source element."""
    source = call.args[-1]
    return numel(source) if source is not None else 0


def _index_put(call: Call):
    """``index_put(self, indices, values, accumulate)``: an add per value when accumulating, else a copy."""
    return numel(call["values"]) if call["accumulate"] else 0


def _fft_lines(shape, dim: int) -> tuple[int, int]:
    n = shape[dim]
    return (math.prod(shape) // n if n else 0), n


def _fft_r2c(call: Call):
    x, out = call.args[0], call.out
    dims = [d % x.dim() for d in call.args[1]]
    lines, n = _fft_lines(x.shape, dims[-1])
    total = lines * rfft_flops(n) if n > 1 else 0
    for d in dims[:-1]:  # the other dimensions are complex transforms of the (half-)spectrum
        lines, n = _fft_lines(out.shape, d)
        total += lines * fft_flops(n) if n > 1 else 0
    return total


def _fft_c2r(call: Call):
    x, out = call.args[0], call.out
    dims = [d % x.dim() for d in call.args[1]]
    total = 0
    for d in dims[:-1]:
        lines, n = _fft_lines(x.shape, d)
        total += lines * fft_flops(n) if n > 1 else 0
    lines, n = _fft_lines(out.shape, dims[-1])
    return total + (lines * rfft_flops(n) if n > 1 else 0)


def _fft_c2c(call: Call):
    x = call.args[0]
    total = 0
    for d in call.args[1]:
        lines, n = _fft_lines(x.shape, d % x.dim())
        total += lines * fft_flops(n) if n > 1 else 0
    return total


#: ``aten`` op name → formula (names this torch lacks are skipped by the registry)
FORMULAS: dict[str, Callable] = {}


def _add(names: str, formula: Callable) -> None:
    for name in names.split():
        FORMULAS[name] = formula


for _name in _POINTWISE_FACTOR:
    _add(f"{_name} {_name}_", _pointwise(_name))
_add("conj_physical conj_physical_", _conj_physical)
_add("sum nansum prod amax amin max min all any argmax argmin", _reduction())
_add("mean nanmean", _reduction(extra_per_output=1))
_add("cumsum cumsum_ cumprod cumprod_ cummax cummin", _cumulative)
_add("var var_mean", _variance(per_output=0))
_add("std std_mean", _variance(per_output=1))
_add("linalg_vector_norm norm", _per_input(2))
_add("logsumexp", _per_input(4))
_add("sort", _sort)
_add("topk", _topk)
_add("histc", _histc)
_add("mm", _mm)
_add("addmm", _addmm)
_add("bmm", _bmm)
_add("baddbmm", _baddbmm)
_add("mv", _mv)
_add("_grouped_mm", _grouped_mm)
_add("addmv", _addmv)
_add("dot vdot", _dot)
_add("index_add index_add_ scatter_add scatter_add_", _scatter_add)
_add("index_put index_put_ _index_put_impl_", _index_put)
_add("_fft_r2c", _fft_r2c)
_add("_fft_c2r", _fft_c2r)
_add("_fft_c2c", _fft_c2c)
