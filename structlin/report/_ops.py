"""FLOP formulas of the ops a model runs, by ``aten`` op: what the report's counting mode reads.

Conventions (``docs/report.md`` states them with sources):

* matmul family: a multiply-add is 2 FLOPs (``mm`` ``2·m·k·n``); ``addmm``/``baddbmm`` add one FLOP per output
  element for the bias add;
* FFTs: ``5·n·log₂n`` per complex transform of length ``n``, half for a real-input (``_fft_r2c``) or real-output
  (``_fft_c2r``) transform, per transformed line and dimension; the normalization folded into the transform is
  not counted separately (as FFTW's benchmark convention does not);
* pointwise ops: 1 FLOP per output element per op (an activation or its backward is one op, a comparison
  too), 2 for the fused ``addcmul``/``addcdiv``/``lerp``; complex outputs: add/sub/neg 2, real×complex multiply
  2, complex×complex 6, complex÷real 2, complex÷complex 11, conjugation 1;
* reductions (``sum``, ``mean``, ``amax``, …): ``inputs − outputs`` elements (the adds or comparisons a tree or
  a loop does; 2 per complex add), ``mean`` 1 more per output for the division;
* data movement (views, copies, gathers, indexing, concatenation, padding, creation of constant tensors): 0,
  by the explicit list :data:`DATA_MOVEMENT`;
* layer/batch norm and softmax: the ops of the textbook algorithm, per element (see their formulas below);
  attention kernels: their matmuls, as ``torch.utils.flop_counter`` counts them;
* any other op with a formula registered with ``torch.utils.flop_counter`` (structlin's transforms, attention,
  convolutions, users' own custom ops) is counted by that formula;
* anything else is *unsupported*: the report lists it and marks the FLOPs that include it as unknown.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..costs import fft_flops, rfft_flops

__all__ = ["formula_for", "DATA_MOVEMENT", "register_data_movement", "op_name"]

aten = torch.ops.aten

#: Ops that only move, select, reshape or create data: 0 FLOPs.
DATA_MOVEMENT: set = set()

_DATA_NAMES = """
view _unsafe_view reshape expand expand_as permute t transpose squeeze unsqueeze select slice narrow
index_select gather cat stack clone copy_ copy _to_copy to detach alias as_strided contiguous flip roll
constant_pad_nd pad reflection_pad1d reflection_pad2d replication_pad1d replication_pad2d index _unsafe_index
split split_with_sizes unbind chunk zeros zeros_like ones ones_like empty empty_like empty_strided new_zeros
new_empty new_ones new_full new_empty_strided full full_like fill_ fill zero_ arange scalar_tensor
select_backward slice_backward slice_scatter select_scatter as_strided_scatter view_as_real view_as_complex
_conj _neg_view _reshape_alias lift_fresh lift_fresh_copy masked_fill masked_fill_ where repeat unfold
permute_copy t_copy view_copy transpose_copy unsqueeze_copy squeeze_copy expand_copy _unsafe_view_copy
scatter scatter_ set_ resize_ diagonal diag_embed tril triu _local_scalar_dense
item is_same_size equal embedding randn rand randint randperm normal_ uniform_ bernoulli_ random_ empty_permuted
squeeze_ unsqueeze_ t_ transpose_ swapdims_ swapaxes_ as_strided_ detach_
""".split()

for _name in _DATA_NAMES:
    if hasattr(aten, _name):
        DATA_MOVEMENT.add(getattr(aten, _name))
if hasattr(torch.ops, "structlin") and hasattr(torch.ops.structlin, "gather_last"):
    DATA_MOVEMENT.add(torch.ops.structlin.gather_last)


def register_data_movement(op) -> None:
    """Declare an op (an ``OpOverloadPacket`` such as ``torch.ops.mylib.shuffle``) as data movement: 0 FLOPs."""
    DATA_MOVEMENT.add(op)


def op_name(func) -> str:
    """``"aten.mm"`` for ``aten.mm.default``: the op's overload packet, the key of ``by_operator()``."""
    return str(getattr(func, "_overloadpacket", func))


def _numel(t) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 1


def _outputs(out) -> list:
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _out_numel(out) -> int:
    return sum(t.numel() for t in _outputs(out))


# Pointwise ops: FLOPs per real output element.
_POINTWISE_NAMES = """
add sub rsub mul div neg abs exp exp2 expm1 log log2 log10 log1p sqrt rsqrt pow reciprocal sign sgn square
relu relu6 gelu gelu_backward threshold threshold_backward silu silu_backward sigmoid sigmoid_backward tanh
tanh_backward sin cos tan asin acos atan atan2 sinh cosh erf erfc erfinv clamp clamp_min clamp_max maximum
minimum fmax fmin leaky_relu leaky_relu_backward elu elu_backward softplus softplus_backward hardtanh
hardtanh_backward hardsigmoid hardsigmoid_backward hardswish hardswish_backward mish mish_backward
log_sigmoid_forward log_sigmoid_backward celu selu floor ceil round trunc frac remainder fmod xlogy
logit logit_backward native_dropout native_dropout_backward eq ne gt ge lt le logical_not logical_and logical_or
logical_xor isnan isinf nan_to_num
""".split()
_POINTWISE_FACTOR = {name: 1 for name in _POINTWISE_NAMES}
_POINTWISE_FACTOR.update(addcmul=2, addcdiv=2, lerp=2)

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
    def formula(args, kwargs, out):
        outs = _outputs(out)
        if any(t.is_complex() for t in outs):
            factor = _complex_factor(name, args)
            if factor is None:
                return None
        else:
            factor = _POINTWISE_FACTOR[name]
        return factor * sum(t.numel() for t in outs)

    return formula


def _conj_physical(args, kwargs, out):
    return _out_numel(out) if _is_complex(args[0]) else 0


def _reduction(extra_per_output: int = 0) -> Callable:
    def formula(args, kwargs, out):
        if len(args) > 1 and isinstance(args[1], torch.Tensor):  # max.other, min.other: elementwise
            return _out_numel(out)
        inputs, outputs = _numel(args[0]), _outputs(out)[0].numel()  # max/min with dim also return indices
        factor = 2 if args[0].is_complex() else 1  # a complex add is two real adds
        return factor * (max(inputs - outputs, 0) + extra_per_output * outputs)

    return formula


def _mm(args, kwargs, out):
    (m, k), n = args[0].shape, args[1].shape[-1]
    return 2 * m * k * n


def _addmm(args, kwargs, out):
    return _mm(args[1:], kwargs, out) + out.numel()


def _bmm(args, kwargs, out):
    b, m, k = args[0].shape
    return 2 * b * m * k * args[1].shape[-1]


def _baddbmm(args, kwargs, out):
    return _bmm(args[1:], kwargs, out) + out.numel()


def _mv(args, kwargs, out):
    m, k = args[0].shape
    return 2 * m * k


def _dot(args, kwargs, out):
    return 2 * args[0].numel()


def _scatter_add(args, kwargs, out):
    """``index_add``/``scatter_add``/``index_put(accumulate=True)``: one add per source element."""
    return _numel(args[-1]) if args[-1] is not None else 0


def _index_put(args, kwargs, out):
    """``index_put(self, indices, values, accumulate)``: an add per value when accumulating, else a copy."""
    accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
    return _numel(args[2]) if accumulate else 0


def _embedding_backward(args, kwargs, out):
    return _numel(args[0])  # each row of the output gradient is added into its embedding's gradient


def _layer_norm(args, kwargs, out):
    """Per element: the mean's add, the centring, the square and its add, the scaling by ``1/σ`` (5), and the
    affine multiply and add when present; per normalized row: two divisions, ``+ε`` and the ``rsqrt`` (4)."""
    x, shape, weight, bias = args[0], args[1], args[2], args[3]
    size = math.prod(shape)
    per_element = 5 + (weight is not None) + (bias is not None)
    return per_element * x.numel() + 4 * (x.numel() // size if size else 0)


def _layer_norm_backward(args, kwargs, out):
    """Input gradient ``(1/σ)(g' − mean(g') − x̂ · mean(g' x̂))`` with ``g' = g·w``: x̂ (2), g' (1 with a weight),
    g'x̂ (1), two means' adds (2), two subtractions, a product and the scaling (4); weight gradient ``Σ g x̂``
    (2 with x̂ shared); bias gradient ``Σ g`` (1)."""
    grad, weight, mask = args[0], args[5], args[7]
    n = grad.numel()
    flops = 0
    if mask[0]:
        flops += (10 + (weight is not None)) * n
    if mask[1]:
        flops += 2 * n
    if mask[2]:
        flops += n
    return flops


def _batch_norm(args, kwargs, out):
    """Training: the layer-norm count with statistics per channel (dim 1), plus the running statistics' update
    (3 per channel each); evaluation: the centring and scaling (2 per element) and the affine map."""
    x, weight, bias = args[0], args[1], args[2]
    channels = x.shape[1] if x.dim() > 1 else x.numel()
    affine = (weight is not None) + (bias is not None)
    if _batch_norm_training(args):
        running = 6 * channels if len(args) > 4 and isinstance(args[3], torch.Tensor) else 0
        return (5 + affine) * x.numel() + 4 * channels + running
    return (2 + affine) * x.numel() + 2 * channels  # 1/sqrt(var + eps) per channel


def _batch_norm_training(args) -> bool:
    flags = [a for a in args[3:6] if isinstance(a, bool)]
    return flags[0] if flags else False  # _native_batch_norm_legit_no_training has no flag


def _batch_norm_backward(args, kwargs, out):
    """As the layer norm's backward in training mode; in evaluation the input gradient is ``g w / σ`` (2)."""
    grad, weight, train, mask = args[0], args[2], args[7], args[9]
    n = grad.numel()
    per_input = (10 + (weight is not None)) if train else 1 + (weight is not None)
    return per_input * n * mask[0] + 2 * n * mask[1] + n * mask[2]


def _softmax(args, kwargs, out):
    """Max (1), subtraction (1), ``exp`` (1), sum (1) and division (1) per element; ``log_softmax`` takes the
    log of the sum per row and subtracts it instead of dividing: also 5 per element."""
    return 5 * args[0].numel()


def _softmax_backward(args, kwargs, out):
    """``y (g − Σ g y)``: product, sum, subtraction, product; ``log_softmax``: ``g − exp(y) Σ g`` likewise 4."""
    return 4 * args[0].numel()


def _cpu_attention(args, kwargs, out):
    """The CPU flash-attention kernel, counted as ``torch.utils.flop_counter`` counts the other attention kernels:
    the two matmuls (the softmax inside is not counted)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape)


def _cpu_attention_backward(args, kwargs, out):
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(args[0].shape, args[1].shape, args[2].shape, args[3].shape)


def _fft_lines(shape, dim: int) -> tuple[int, int]:
    n = shape[dim]
    return (math.prod(shape) // n if n else 0), n


def _fft_r2c(args, kwargs, out):
    x, dims = args[0], [d % args[0].dim() for d in args[1]]
    lines, n = _fft_lines(x.shape, dims[-1])
    total = lines * rfft_flops(n) if n > 1 else 0
    for d in dims[:-1]:  # the other dimensions are complex transforms of the (half-)spectrum
        lines, n = _fft_lines(out.shape, d)
        total += lines * fft_flops(n) if n > 1 else 0
    return total


def _fft_c2r(args, kwargs, out):
    x, dims = args[0], [d % args[0].dim() for d in args[1]]
    total = 0
    for d in dims[:-1]:
        lines, n = _fft_lines(x.shape, d)
        total += lines * fft_flops(n) if n > 1 else 0
    lines, n = _fft_lines(out.shape, dims[-1])
    return total + (lines * rfft_flops(n) if n > 1 else 0)


def _fft_c2c(args, kwargs, out):
    x = args[0]
    total = 0
    for d in args[1]:
        lines, n = _fft_lines(x.shape, d % x.dim())
        total += lines * fft_flops(n) if n > 1 else 0
    return total


def _convolution(args, kwargs, out):
    from torch.utils.flop_counter import conv_flop_count

    x, w, bias, transposed = args[0], args[1], args[2], args[6]
    return conv_flop_count(x.shape, w.shape, out.shape, transposed=transposed) + (out.numel() if bias is not None else 0)


def _convolution_backward(args, kwargs, out):
    from torch.utils.flop_counter import conv_backward_flop

    grad, mask = args[0], args[10]
    flops = conv_backward_flop(*[a.shape if isinstance(a, torch.Tensor) else a for a in args],
                               out_shape=[o.shape if isinstance(o, torch.Tensor) else None for o in out])
    if mask[2]:  # bias gradient: sum of the output gradient over batch and positions
        flops += grad.numel() - grad.shape[1]
    return flops


_FORMULAS: dict = {}


def _register(names, formula) -> None:
    for name in names.split():
        if hasattr(aten, name):
            _FORMULAS[getattr(aten, name)] = formula


for _name in _POINTWISE_FACTOR:
    _register(_name, _pointwise(_name))
    _register(_name + "_", _pointwise(_name))
_register("conj_physical conj_physical_", _conj_physical)
_register("sum amax amin max min all any argmax argmin", _reduction())
_register("mean", _reduction(extra_per_output=1))
_register("mm", _mm)
_register("addmm", _addmm)
_register("bmm", _bmm)
_register("baddbmm", _baddbmm)
_register("mv", _mv)
_register("dot vdot", _dot)
_register("index_add index_add_ scatter_add scatter_add_", _scatter_add)
_register("index_put index_put_ _index_put_impl_", _index_put)
_register("embedding_dense_backward", _embedding_backward)
_register("native_layer_norm", _layer_norm)
_register("native_layer_norm_backward", _layer_norm_backward)
_register("native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training", _batch_norm)
_register("native_batch_norm_backward", _batch_norm_backward)
_register("_softmax _log_softmax", _softmax)
_register("_softmax_backward_data _log_softmax_backward_data", _softmax_backward)
_register("_scaled_dot_product_flash_attention_for_cpu", _cpu_attention)
_register("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_attention_backward)
_register("_fft_r2c", _fft_r2c)
_register("_fft_c2r", _fft_c2r)
_register("_fft_c2c", _fft_c2c)
_register("convolution", _convolution)
_register("convolution_backward", _convolution_backward)


def formula_for(func) -> Callable | None:
    """The FLOP formula ``formula(args, kwargs, out) -> int | None`` of an op, or ``None`` if it has none.

    ``None`` from the formula itself means "no formula for these arguments" (e.g. a complex ``exp``).
    """
    packet = getattr(func, "_overloadpacket", func)
    if packet in DATA_MOVEMENT:
        return _zero
    if packet in _FORMULAS:
        return _FORMULAS[packet]
    from torch.utils.flop_counter import flop_registry

    if packet in flop_registry:
        registered = flop_registry[packet]
        return lambda args, kwargs, out: registered(*args, **kwargs, out_val=out)
    return None


def _zero(args, kwargs, out):
    return 0
