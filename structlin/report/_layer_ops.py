"""FLOP formulas of the kernels behind the standard layers: convolutions, norms, softmax, attention, embeddings,
pooling, resampling, padding, LSTM and losses.

Each formula takes a :class:`~._call.Call` and returns FLOPs; :data:`FORMULAS` maps ``aten`` op names to them.
The conventions (``docs/report.md`` has them as a table):

* convolution: a multiply-add (2 FLOPs) for every kernel tap at every output position (input position for a
  transposed convolution), padding included, as ``torch.utils.flop_counter`` counts it, plus 1 per output
  element for the bias. Backward: the input gradient and the weight gradient each repeat every multiply-add of
  the forward; the bias gradient sums the output gradient over batch and positions. (For grouped convolutions
  ``FlopCounterMode`` counts the weight gradient ``groups`` times over; here it is the forward's count.)
* layer, group and batch norm, RMS norm: the ops of the textbook algorithm, per element and per normalized row;
* softmax and log-softmax: 5 per element, backward 4;
* fused attention kernels: their two matmuls, as ``torch.utils.flop_counter`` counts them;
* embedding: a lookup (0); its backward adds each gradient row into its embedding's row; ``EmbeddingBag``:
  the adds (max: comparisons) that pool each bag, the per-sample weights' products, the mean's divisions;
* pooling: per output element, max ``k − 1`` comparisons, average ``k`` (``k − 1`` adds and a division) over
  the window of ``k`` elements; backward: max adds each output gradient into the input gradient (1 per output
  element), average scales it and adds it to its window (``k + 1``);
* resampling: nearest is a lookup, its backward sums each input position's copies (``outputs − inputs``);
  interpolation weighs ``t`` taps (linear 2, bilinear 4, trilinear 8, bicubic 16): ``2t − 1`` per output
  element, backward ``2t``;
* padding: a copy; the backward of reflection and replication padding adds the border gradients back
  (``outputs − inputs``);
* LSTM (the fused CPU kernel, one per layer and direction): what the decomposed cell counts, forward and
  backward (every gradient the kernel returns, initial states included);
* losses: ``mse_loss`` 2 per element (subtraction, square) and the reduction, backward 3 (+1 for the mean);
  ``nll_loss`` a negation per target (and a product with its class weight), the reduction's adds and the mean's
  division, backward the same per target.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ._call import Call, numel

__all__ = ["FORMULAS"]


# --- convolution ---------------------------------------------------------------------------------------------

def _conv_multiply_adds(x: torch.Size, w: torch.Size, y: torch.Size, transposed: bool) -> int:
    """2 FLOPs per (input element, weight element) product of a convolution: every tap of the weight
    ``(C_out, C_in/groups, *k)`` (transposed: ``(C_in, C_out/groups, *k)``) at every output position (transposed:
    input position), for each batch element."""
    positions = math.prod((x if transposed else y)[2:])
    return 2 * x[0] * positions * math.prod(w)


def _convolution(call: Call):
    x, w, out = call["input"], call["weight"], call.out
    flops = _conv_multiply_adds(x.shape, w.shape, out.shape, call["transposed"])
    return flops + (out.numel() if call["bias"] is not None else 0)


def _convolution_backward(call: Call):
    """Input and weight gradients repeat the forward's multiply-adds; the bias gradient sums the output gradient
    over batch and positions."""
    grad, x, w, mask = call["grad_output"], call["input"], call["weight"], call["output_mask"]
    forward = _conv_multiply_adds(x.shape, w.shape, grad.shape, call["transposed"])
    flops = forward * (bool(mask[0]) + bool(mask[1]))
    if mask[2]:
        flops += grad.numel() - grad.shape[1]
    return flops


# --- norms -----------------------------------------------------------------------------------------------------

def _normalization(elements: int, rows: int, affine: int) -> int:
    """Per element: the mean's add, the centring, the square and its add, the scaling by ``1/σ`` (5), and the
    affine multiply and add when present; per normalized row (or channel, or group): two divisions, ``+ε`` and
    the ``rsqrt`` (4)."""
    return (5 + affine) * elements + 4 * rows


def _normalization_backward(elements: int, weight: bool, mask) -> int:
    """Input gradient ``(1/σ)(g' − mean(g') − x̂ · mean(g' x̂))`` with ``g' = g·w``: x̂ (2), g' (1 with a weight),
    g'x̂ (1), two means' adds (2), two subtractions, a product and the scaling (4); weight gradient ``Σ g x̂``
    (2 with x̂ shared); bias gradient ``Σ g`` (1)."""
    return ((10 + weight) * mask[0] + 2 * mask[1] + mask[2]) * elements


def _layer_norm(call: Call):
    x, size = call["input"], math.prod(call["normalized_shape"])
    affine = (call["weight"] is not None) + (call["bias"] is not None)
    return _normalization(x.numel(), x.numel() // size if size else 0, affine)


def _layer_norm_backward(call: Call):
    return _normalization_backward(call["grad_out"].numel(), call["weight"] is not None, call["output_mask"])


def _group_norm(call: Call):
    affine = (call["weight"] is not None) + (call["bias"] is not None)
    return _normalization(call["input"].numel(), call["N"] * call["group"], affine)


def _group_norm_backward(call: Call):
    return _normalization_backward(call["grad_out"].numel(), call["weight"] is not None, call["output_mask"])


def _batch_norm(call: Call):
    """Training: the normalization with statistics per channel (dim 1), plus the running statistics' update
    (3 per channel each); evaluation: the centring and scaling (2 per element, ``1/√(var+ε)`` 2 per channel)
    and the affine map."""
    x = call.args[0]
    weight, bias = call.args[1], call.args[2]
    channels = x.shape[1] if x.dim() > 1 else x.numel()
    affine = (weight is not None) + (bias is not None)
    if _batch_norm_training(call.args):
        running = 6 * channels if len(call.args) > 4 and isinstance(call.args[3], torch.Tensor) else 0
        return _normalization(x.numel(), channels, affine) + running
    return (2 + affine) * x.numel() + 2 * channels


def _batch_norm_training(args) -> bool:
    flags = [a for a in args[3:6] if isinstance(a, bool)]
    return flags[0] if flags else False  # _native_batch_norm_legit_no_training has no flag


def _batch_norm_backward(call: Call):
    """As the normalization's backward in training mode; in evaluation the input gradient is ``g w / σ`` (2)."""
    grad, weight, mask = call["grad_out"], call["weight"] is not None, call["output_mask"]
    if call["train"]:
        return _normalization_backward(grad.numel(), weight, mask)
    return ((1 + weight) * mask[0] + 2 * mask[1] + mask[2]) * grad.numel()


def _rms_norm(call: Call):
    """Per element: the square and its add, the scaling by ``1/rms`` (3), the weight's product; per row: the
    division, ``+ε`` and the ``rsqrt`` (3)."""
    x, size = call["input"], math.prod(call["normalized_shape"])
    return (3 + (call["weight"] is not None)) * x.numel() + 3 * (x.numel() // size if size else 0)


def _rms_norm_backward(call: Call):
    """Input gradient ``(1/rms)(g' − x̂ · mean(g' x̂))``: x̂, g' (with a weight), g'x̂, the mean's add, the product,
    the subtraction and the scaling; weight gradient ``Σ g x̂`` (2)."""
    n, mask = call["grad_out"].numel(), call["output_mask"]
    return ((6 + (call["weight"] is not None)) * mask[0] + 2 * mask[1]) * n


# --- softmax and attention -------------------------------------------------------------------------------------

def _softmax(call: Call):
    """Max (1), subtraction (1), ``exp`` (1), sum (1) and division (1) per element; ``log_softmax`` takes the
    log of the sum per row and subtracts it instead of dividing: also 5 per element."""
    return 5 * call.args[0].numel()


def _safe_softmax(call: Call):
    """A softmax (5 per element) that sets rows masked out entirely (all ``-inf``) to 0: a comparison per
    element and the reduction over the row that finds them."""
    x = call.args[0]
    rows = x.numel() // max(x.shape[call["dim"]], 1) if x.dim() else 1
    return 7 * x.numel() - rows


def _softmax_backward(call: Call):
    """``y (g − Σ g y)``: product, sum, subtraction, product; ``log_softmax``: ``g − exp(y) Σ g`` likewise 4."""
    return 4 * call.args[0].numel()


def _cpu_attention(call: Call):
    """The CPU flash-attention kernel, counted as ``torch.utils.flop_counter`` counts the other attention kernels:
    the two matmuls (the softmax inside is not counted)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(call.args[0].shape, call.args[1].shape, call.args[2].shape)


def _cpu_attention_backward(call: Call):
    from torch.utils.flop_counter import sdpa_backward_flop_count

    a = call.args
    return sdpa_backward_flop_count(a[0].shape, a[1].shape, a[2].shape, a[3].shape)


# --- embeddings ------------------------------------------------------------------------------------------------

_BAG_SUM, _BAG_MEAN, _BAG_MAX = 0, 1, 2


def _embedding_backward(call: Call):
    return numel(call.args[0])  # each row of the output gradient is added into its embedding's gradient


def _embedding_bag(call: Call):
    """Pooling ``n`` looked-up rows of width ``D`` into ``bags`` rows: ``(n − bags)·D`` adds (max: comparisons),
    ``n·D`` products with per-sample weights, ``bags·D`` divisions for the mean."""
    width, n, bags = call["weight"].shape[-1], call["indices"].numel(), call.outputs[0].shape[0]
    flops = max(n - bags, 0) * width
    if call["per_sample_weights"] is not None:
        flops += n * width
    if call["mode"] == _BAG_MEAN:
        flops += bags * width
    return flops


def _embedding_bag_backward(call: Call):
    """Each looked-up row's bag gradient added into its embedding's gradient (max: only the selected rows), scaled
    first for the mean or by a per-sample weight."""
    grad, mode = call["grad"], call["mode"]
    width = grad.shape[-1]
    if mode == _BAG_MAX:
        return grad.numel()
    scaled = mode == _BAG_MEAN or call["per_sample_weights"] is not None
    return (1 + scaled) * call["indices"].numel() * width


def _embedding_bag_per_sample_weights_backward(call: Call):
    """The gradient of each per-sample weight: a dot product of width ``D`` (``2D − 1``)."""
    return call["indices"].numel() * (2 * call["grad"].shape[-1] - 1)


# --- pooling ---------------------------------------------------------------------------------------------------

def _window(kernel_size, dims: int) -> int:
    kernel = list(kernel_size)
    return math.prod(kernel) if len(kernel) == dims else kernel[0] ** dims


def _max_pool(dims: int) -> Callable:
    def formula(call: Call):
        return call.outputs[0].numel() * (_window(call["kernel_size"], dims) - 1)

    return formula


def _avg_pool(dims: int) -> Callable:
    def formula(call: Call):
        return call.out.numel() * _window(call["kernel_size"], dims)

    return formula


def _avg_pool_backward(dims: int) -> Callable:
    def formula(call: Call):
        return call["grad_output"].numel() * (_window(call["kernel_size"], dims) + 1)

    return formula


def _grad_output_numel(call: Call):
    return call.args[0].numel()


def _adaptive_windows(x_shape, out_shape, dims: int) -> int:
    """Elements of all the windows of an adaptive pooling over the last ``dims`` dimensions: output ``i`` of
    ``o`` covers ``[⌊i·n/o⌋, ⌈(i+1)·n/o⌉)`` of the input's ``n`` in each dimension."""
    total = math.prod(out_shape[:-dims])
    for n, o in zip(x_shape[-dims:], out_shape[-dims:]):
        total *= sum(-(-(i + 1) * n // o) - i * n // o for i in range(o))
    return total


def _adaptive_avg_pool(dims: int) -> Callable:
    def formula(call: Call):
        return _adaptive_windows(call.args[0].shape, call.out.shape, dims)  # k − 1 adds and a division each

    return formula


def _adaptive_avg_pool_backward(dims: int) -> Callable:
    def formula(call: Call):
        grad, x = call.args[0], call.args[1]
        return _adaptive_windows(x.shape, grad.shape, dims) + grad.numel()

    return formula


def _adaptive_max_pool(dims: int) -> Callable:
    def formula(call: Call):
        out = call.outputs[0]
        return _adaptive_windows(call.args[0].shape, out.shape, dims) - out.numel()

    return formula


# --- resampling and padding ------------------------------------------------------------------------------------

def _interpolate(taps: int) -> Callable:
    def formula(call: Call):
        return (2 * taps - 1) * call.out.numel()

    return formula


def _interpolate_backward(taps: int) -> Callable:
    def formula(call: Call):
        return 2 * taps * call.args[0].numel()

    return formula


def _fold_back(call: Call):
    """Gradients of copies summed back into their source (nearest upsampling, reflection and replication
    padding), ``col2im``: ``inputs − outputs`` adds."""
    return max(call.args[0].numel() - call.out.numel(), 0)


# --- losses ----------------------------------------------------------------------------------------------------

_NONE, _MEAN = 0, 1


def _mse_loss(call: Call):
    n = call.args[0].numel()
    reduction = call["reduction"]
    return 2 * n + (0 if reduction == _NONE else n - 1 + (reduction == _MEAN))


def _mse_loss_backward(call: Call):
    return (3 + (call["reduction"] == _MEAN)) * call["self"].numel()


def _nll_loss(call: Call):
    targets, reduction = call["target"].numel(), call["reduction"]
    weighted = call["weight"] is not None
    flops = (1 + weighted) * targets
    if reduction != _NONE:
        flops += max(targets - 1, 0)
    if reduction == _MEAN:
        flops += 1 + (max(targets - 1, 0) if weighted else 0)  # the division; the weights' sum
    return flops


def _nll_loss_backward(call: Call):
    per_target = 1 + (call["weight"] is not None) + (call["reduction"] == _MEAN)
    return per_target * call["target"].numel()


# --- recurrent layers ------------------------------------------------------------------------------------------

def _lstm_sizes(call: Call) -> tuple[int, int, int, int, int] | None:
    """``(rows, batch, input size, hidden size, gates)`` of one LSTM layer's fused kernel (one direction), or
    ``None`` when the kernel runs another cell. Forward and backward take the input, the input-to-hidden weight
    and the initial hidden state at the same positions."""
    x, w_ih, hx = call.args[0], call.args[1], call.args[5]
    gates, inputs = w_ih.shape
    hidden = call["hidden_size"]
    if gates != 4 * hidden or inputs == 0:
        return None
    return x.numel() // inputs, hx.numel() // hidden, inputs, hidden, gates


def _lstm(call: Call):
    """Per row (time step × batch element): the input and hidden projections (multiply-adds), their biases and
    their sum, the four gate activations, ``c = f·c' + i·g`` (3) and ``h = o·tanh(c)`` (2) — what the
    decomposed LSTM cell counts."""
    sizes = _lstm_sizes(call)
    if sizes is None:
        return None
    rows, _, inputs, hidden, gates = sizes
    adds = 3 * gates if call["has_biases"] else gates
    return rows * (2 * gates * (inputs + hidden) + adds + gates + 5 * hidden)


def _lstm_backward(call: Call):
    """Every gradient the kernel returns — input, both weights, both biases, initial hidden and cell state — as
    the decomposed LSTM cell's backward counts them: per row the four projection gradients (multiply-adds), the
    gates' and the cell's pointwise backward (11 per hidden unit) and the bias gradients' sums; per step but the
    first the hidden weight's gradient sum; and the sums of the gradients that reach each hidden and cell state
    from the output, the next step and the final states."""
    sizes = _lstm_sizes(call)
    if sizes is None:
        return None
    rows, batch, inputs, hidden, gates = sizes
    steps = rows // batch if batch else 0
    grad_output, grad_hy, grad_cy = (call.args[i] is not None for i in (10, 11, 12))
    flops = 4 * rows * gates * (inputs + hidden) + 11 * rows * hidden + max(steps - 1, 0) * gates * hidden
    if call["has_biases"]:
        flops += 2 * max(rows - 1, 0) * gates
    last = batch * hidden  # the states of the last step: gradients from the output and the final states
    flops += (rows - batch) * hidden * grad_output + last * max(grad_output + grad_hy - 1, 0)
    flops += (rows - batch) * hidden + last * grad_cy
    return flops


#: ``aten`` op name → formula (names this torch lacks are skipped by the registry)
FORMULAS: dict[str, Callable] = {}


def _add(names: str, formula: Callable) -> None:
    for name in names.split():
        FORMULAS[name] = formula


_add("convolution _convolution", _convolution)
_add("convolution_backward", _convolution_backward)
_add("native_layer_norm", _layer_norm)
_add("native_layer_norm_backward", _layer_norm_backward)
_add("native_group_norm", _group_norm)
_add("native_group_norm_backward", _group_norm_backward)
_add("native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training", _batch_norm)
_add("native_batch_norm_backward", _batch_norm_backward)
_add("_fused_rms_norm", _rms_norm)
_add("_fused_rms_norm_backward", _rms_norm_backward)
_add("_softmax _log_softmax", _softmax)
_add("_safe_softmax", _safe_softmax)
_add("_softmax_backward_data _log_softmax_backward_data", _softmax_backward)
_add("_scaled_dot_product_flash_attention_for_cpu", _cpu_attention)
_add("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_attention_backward)
_add("embedding_dense_backward", _embedding_backward)
_add("_embedding_bag _embedding_bag_forward_only", _embedding_bag)
_add("_embedding_bag_backward _embedding_bag_dense_backward _embedding_bag_sparse_backward", _embedding_bag_backward)
_add("_embedding_bag_per_sample_weights_backward", _embedding_bag_per_sample_weights_backward)
for _dims in (1, 2, 3):
    _add(f"max_pool{_dims}d max_pool{_dims}d_with_indices", _max_pool(_dims))
    _add(f"max_pool{_dims}d_with_indices_backward adaptive_max_pool{_dims}d_backward", _grad_output_numel)
    _add(f"fractional_max_pool{_dims}d", _max_pool(_dims))
    _add(f"fractional_max_pool{_dims}d_backward", _grad_output_numel)
    _add(f"avg_pool{_dims}d", _avg_pool(_dims))
    _add(f"avg_pool{_dims}d_backward", _avg_pool_backward(_dims))
    _add(f"adaptive_avg_pool{_dims}d _adaptive_avg_pool{_dims}d", _adaptive_avg_pool(_dims))
    _add(f"_adaptive_avg_pool{_dims}d_backward", _adaptive_avg_pool_backward(_dims))
    _add(f"adaptive_max_pool{_dims}d", _adaptive_max_pool(_dims))
    _add(f"upsample_nearest{_dims}d_backward _upsample_nearest_exact{_dims}d_backward", _fold_back)
    _add(f"reflection_pad{_dims}d_backward replication_pad{_dims}d_backward", _fold_back)
_add("col2im", _fold_back)
for _name, _taps in (("linear1d", 2), ("bilinear2d", 4), ("trilinear3d", 8), ("bicubic2d", 16)):
    _add(f"upsample_{_name}", _interpolate(_taps))
    _add(f"upsample_{_name}_backward", _interpolate_backward(_taps))
_add("mse_loss", _mse_loss)
_add("mse_loss_backward", _mse_loss_backward)
_add("nll_loss_forward nll_loss2d_forward", _nll_loss)
_add("nll_loss_backward nll_loss2d_backward", _nll_loss_backward)



_add("mkldnn_rnn_layer", _lstm)
_add("mkldnn_rnn_layer_backward", _lstm_backward)
