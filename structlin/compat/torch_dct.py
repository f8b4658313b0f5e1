r"""torch-dct 0.1.6's API on structlin's transforms: ``import structlin.compat.torch_dct as torch_dct``.

Every public name of torch-dct with its signature and defaults: :func:`dct`, :func:`idct` (DCT-II and its
inverse), :func:`dct1`, :func:`idct1` (DCT-I), :func:`dct_2d`, :func:`idct_2d`, :func:`dct_3d`, :func:`idct_3d`
(over the last 2 or 3 dimensions), :class:`LinearDCT` (an ``nn.Linear`` holding a transform's matrix) and
:func:`apply_linear_2d`, :func:`apply_linear_3d`. The values are torch-dct's (scipy's conventions; the default
``norm=None`` is the *unnormalized* transform, unlike structlin's own ``norm="ortho"``), and so are the output
shapes and dtypes; the work is done by the fast custom ops of :mod:`structlin.transforms` (one real FFT of length
``n`` per DCT-II, one n-D real FFT for the 2-D and 3-D transforms, analytic backward passes).

Where this module differs from torch-dct (each difference turns a silent wrong answer or a crash into a result or
a clear error):

* ``norm`` must be ``None``, ``"backward"`` (the same as ``None``) or ``"ortho"``; torch-dct treats any other value
  (``"forward"``, a typo) as ``None``, this module raises a ``ValueError``.
* :func:`dct1` / :func:`idct1` need a last dimension of length ``≥ 2`` (torch-dct returns the input for length 1 and
  divides by zero in ``idct1``).
* Outputs are contiguous (torch-dct returns transposed views from the 2-D/3-D functions and a strided view from
  ``dct1``); inputs of any layout are accepted (torch-dct's ``dct1`` needs a contiguous one); float16 and bfloat16
  inputs work (computed in float32).
* :class:`LinearDCT` initializes its bias, when it has one, to zero (torch-dct leaves it uninitialized) and rejects
  an unknown ``type`` (torch-dct then keeps a random weight). Its forward runs the fast transform instead of the
  matrix product while its weight still holds the transform's matrix (see the class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..transforms import dct as _dct
from ..transforms import dct1 as _dct1
from ..transforms import dctn as _dctn
from ..transforms import idct as _idct
from ..transforms import idct1 as _idct1
from ..transforms import idctn as _idctn

__all__ = ["dct", "idct", "dct1", "idct1", "dct_2d", "idct_2d", "dct_3d", "idct_3d", "LinearDCT",
           "apply_linear_2d", "apply_linear_3d"]


def _norm(norm) -> str:
    if norm is None or norm == "backward":
        return "backward"
    if norm == "ortho":
        return "ortho"
    raise ValueError(
        f"norm must be None or 'ortho' (as in torch-dct; 'backward' means None), got {norm!r}. torch-dct treated "
        "any other value as None; for scipy's other normalizations use structlin.transforms.dct(x, norm=...)"
    )


def dct1(x):
    """DCT-I over the last dimension, unnormalized: ``scipy.fft.dct(x, type=1)``. Length ``≥ 2``."""
    return _dct1(x, "backward")


def idct1(X):
    """Inverse of :func:`dct1`: ``idct1(dct1(x)) == x`` (a DCT-I divided by ``2(n − 1)``)."""
    return _idct1(X, "backward")


def dct(x, norm=None):
    """DCT-II over the last dimension, as ``scipy.fft.dct(x, norm=norm)``; ``norm`` is ``None`` or ``"ortho"``."""
    return _dct(x, _norm(norm))


def idct(X, norm=None):
    """Inverse of :func:`dct` for the same ``norm`` (a DCT-III): ``idct(dct(x, norm), norm) == x``."""
    return _idct(X, _norm(norm))


def dct_2d(x, norm=None):
    """DCT-II over the last 2 dimensions (the same ``norm`` along each)."""
    return _dctn(x, (-2, -1), _norm(norm))


def idct_2d(X, norm=None):
    """Inverse of :func:`dct_2d`: ``idct_2d(dct_2d(x, norm), norm) == x``."""
    return _idctn(X, (-2, -1), _norm(norm))


def dct_3d(x, norm=None):
    """DCT-II over the last 3 dimensions (the same ``norm`` along each)."""
    return _dctn(x, (-3, -2, -1), _norm(norm))


def idct_3d(X, norm=None):
    """Inverse of :func:`dct_3d`: ``idct_3d(dct_3d(x, norm), norm) == x``."""
    return _idctn(X, (-3, -2, -1), _norm(norm))


#: LinearDCT's types: the transform of the last dimension, given its internal norm
_TRANSFORMS = {
    "dct1": lambda x, norm: _dct1(x, "backward"),
    "idct1": lambda x, norm: _idct1(x, "backward"),
    "dct": _dct,
    "idct": _idct,
}
#: the n-D transform a LinearDCT of this type applies along several dimensions
_TRANSFORMS_ND = {"dct": _dctn, "idct": _idctn}


class LinearDCT(nn.Linear):
    """A transform as an ``nn.Linear`` of ``in_features → in_features``: ``weight`` is the transform's matrix (frozen,
    ``requires_grad=False``), so ``layer(x) == transform(x) (+ bias)``.

    Args:
        in_features: the transform length ``N``.
        type: ``"dct"``, ``"idct"`` (with ``norm``), ``"dct1"`` or ``"idct1"`` (unnormalized; ``norm`` is ignored, as
            in torch-dct).
        norm: ``None`` or ``"ortho"``.
        bias: add a learnable bias, initialized to zero.

    The weight is computed in float64 by the fast transform and rounded to the layer's dtype. The forward runs the
    fast transform (``O(N log N)`` per row instead of ``O(N²)``) while the weight is frozen and still holds that
    matrix (checked, to the dtype's rounding, once after each change of the weight: an edited, trained or loaded
    weight that is no longer the transform gets the plain matrix product), the input has the weight's dtype and
    device, and neither ``torch.compile`` nor autocast is tracing; otherwise it runs ``F.linear`` exactly as
    ``nn.Linear``.
    """

    def __init__(self, in_features, type, norm=None, bias=False):
        if type not in _TRANSFORMS:
            raise ValueError(f"LinearDCT: type must be one of {sorted(_TRANSFORMS)}, got {type!r}")
        self.type = type
        self.N = in_features
        self.norm = norm
        self._internal_norm = _norm(norm)
        self._checked = (None, False)  # (weight state, whether it held the transform's matrix)
        super().__init__(in_features, in_features, bias=bias)

    def _matrix(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        eye = torch.eye(self.N, dtype=torch.float64, device=device)
        return _TRANSFORMS[self.type](eye, self._internal_norm).T.to(dtype)  # row i of transform(I) is column i

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(self._matrix(self.weight.dtype, self.weight.device))
            if self.bias is not None:
                self.bias.zero_()
        self.weight.requires_grad_(False)
        self._checked = (self._weight_state(), True)

    def _weight_state(self) -> tuple:
        w = self.weight
        return (w.data_ptr(), w._version, w.dtype, w.shape)

    def _holds_transform(self) -> bool:
        w = self.weight
        if w.is_meta or torch._C._functorch.is_functorch_wrapped_tensor(w):
            return False  # no values to compare (a weight swapped in by torch.func.functional_call, say)
        state = self._weight_state()
        if self._checked[0] != state:
            expected = self._matrix(torch.float64, w.device)
            tol = 16 * torch.finfo(w.dtype).eps * expected.abs().max().item()
            ok = w.shape == expected.shape and bool((w.double() - expected).abs().max() <= tol)
            self._checked = (state, ok)
        return self._checked[1]

    def _fast(self, input) -> bool:
        """Whether the fast transform computes this layer's ``F.linear`` on ``input`` (to rounding)."""
        w = self.weight
        return (
            isinstance(input, torch.Tensor)
            and not w.requires_grad
            and input.dtype == w.dtype
            and input.dim() >= 1
            and input.shape[-1] == self.N
            and input.device == w.device
            and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled(input.device.type)
            and self._holds_transform()
        )

    def forward(self, input):
        if self._fast(input):
            y = _TRANSFORMS[self.type](input, self._internal_norm)
            return y if self.bias is None else y + self.bias
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, type={self.type!r}, norm={self.norm!r}"


def _apply_linear(x, linear_layer, k: int):
    """``linear_layer`` applied along each of the last ``k`` dimensions of ``x``."""
    layer = linear_layer
    if (isinstance(layer, LinearDCT) and layer.type in _TRANSFORMS_ND and layer.bias is None and layer._fast(x)
            and x.dim() >= k and all(s == layer.N for s in x.shape[-k:])):
        return _TRANSFORMS_ND[layer.type](x, tuple(range(-k, 0)), layer._internal_norm)
    y = x
    for d in range(-1, -k - 1, -1):
        y = layer(y.transpose(-1, d)).transpose(-1, d)
    return y


def apply_linear_2d(x, linear_layer):
    """``linear_layer`` (any ``nn.Linear``, e.g. a :class:`LinearDCT`) applied along each of the last 2 dimensions.
    With a :class:`LinearDCT` of type ``"dct"``/``"idct"`` and no bias this is one fast 2-D transform."""
    return _apply_linear(x, linear_layer, 2)


def apply_linear_3d(x, linear_layer):
    """``linear_layer`` applied along each of the last 3 dimensions (see :func:`apply_linear_2d`)."""
    return _apply_linear(x, linear_layer, 3)
