"""How a replacement starts: what each ``preserve`` mode does for what a kind can do, as one table.

A kind's capability is read from its class (see :class:`~structlin.StructuredLayer`):

- ``"exact"``: ``exact_from_linear = True``, its ``from_linear`` reproduces any linear map (the quadratic kinds);
- ``"closed-form"``: it overrides ``from_linear`` with an approximate closed form (``lowrank``'s truncated SVD,
  ``monarch``'s projection: a truncated SVD per pair of blocks);
- ``"none"``: it can only be fitted numerically (``acdc``, ``fastfood``).

=============  ===============  =======================================================  ============
capability     ``"auto"``       ``"fit"``                                                ``"none"``
=============  ===============  =======================================================  ============
exact          exact            exact                                                    random init
closed-form    closed-form      closed-form; with calibration data, then fitted to it    random init
none           random init      fitted to the weights, or to the calibration data        random init
=============  ===============  =======================================================  ============
"""

from __future__ import annotations

from dataclasses import dataclass

from ..layers.base import StructuredLayer

__all__ = ["Start", "STARTS", "PRESERVE", "choose_start", "capability"]


@dataclass(frozen=True)
class Start:
    """One way to start a replacement.

    Attributes:
        method: the short name kept in results and plans (``"exact"``, ``"closed-form"``, …).
        label: the words the result's table shows.
        from_linear: built by the kind's ``from_linear`` (else by its constructor, a random init).
        fits: then fitted by least squares (:func:`structlin.fitting.fit`).
    """

    method: str
    label: str
    from_linear: bool
    fits: bool

    @property
    def build(self) -> str:
        """``"from_linear"`` or ``"constructor"``: how the layer is built (what a plan records)."""
        return "from_linear" if self.from_linear else "constructor"


STARTS = {
    start.method: start
    for start in (
        Start("exact", "exact", from_linear=True, fits=False),
        Start("closed-form", "closed-form", from_linear=True, fits=False),
        Start("closed-form+fit", "closed-form, fitted to calibration", from_linear=True, fits=True),
        Start("fit", "fitted to weights", from_linear=False, fits=True),
        Start("fit-calibration", "fitted to calibration", from_linear=False, fits=True),
        Start("init", "random init", from_linear=False, fits=False),
        Start("plan", "from plan (load the weights)", from_linear=False, fits=False),
    )
}

PRESERVE = ("auto", "fit", "none")

# (capability, preserve, calibrated) → method
_TABLE = {
    ("exact", "auto", False): "exact", ("exact", "auto", True): "exact",
    ("exact", "fit", False): "exact", ("exact", "fit", True): "exact",
    ("closed-form", "auto", False): "closed-form", ("closed-form", "auto", True): "closed-form",
    ("closed-form", "fit", False): "closed-form", ("closed-form", "fit", True): "closed-form+fit",
    ("none", "auto", False): "init", ("none", "auto", True): "init",
    ("none", "fit", False): "fit", ("none", "fit", True): "fit-calibration",
}


def capability(cls: type) -> str:
    """``"exact"``, ``"closed-form"`` or ``"none"``: what ``cls``'s ``from_linear`` offers."""
    if cls.exact_from_linear:
        return "exact"
    if cls.from_linear.__func__ is not StructuredLayer.from_linear.__func__:
        return "closed-form"
    return "none"


def choose_start(cls: type, preserve: str, calibrated: bool) -> Start:
    """The :class:`Start` of a ``cls`` replacement under ``preserve`` (``"none"`` is always a random init)."""
    if preserve == "none":
        return STARTS["init"]
    return STARTS[_TABLE[capability(cls), preserve, calibrated]]
