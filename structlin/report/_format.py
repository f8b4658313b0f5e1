"""Numbers in human units and plain-text / markdown tables that fit a width."""

from __future__ import annotations

import math

__all__ = ["human", "number", "table", "SCALES", "WIDTH"]

_DECIMAL = ("", "K", "M", "G", "T", "P")
_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi")

#: how the text forms write counts: ``"auto"`` picks a prefix per number, ``"raw"`` writes every digit, a prefix
#: writes every count in that unit (bytes in the binary unit of the same rank: ``"M"`` → MiB)
SCALES = ("auto", "raw", "K", "M", "G", "T")

#: the widest line, in characters, of the default text forms
WIDTH = 100


def human(value: float, binary: bool = False) -> str:
    """``1_234_567 → "1.23M"``; ``binary=True`` uses powers of 1024 (``"Ki"``, ``"Mi"``) for bytes."""
    base, suffixes = (1024, _BINARY) if binary else (1000, _DECIMAL)
    i = 0
    while abs(value) >= base and i < len(suffixes) - 1:
        value /= base
        i += 1
    if i == 0:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.3g}{suffixes[i]}"


def number(value: float, scale: str = "auto", binary: bool = False) -> str:
    """``value`` written in ``scale`` (one of :data:`SCALES`): ``number(4_630_000, "M") == "4.63M"``,
    ``number(4_630_000, "K") == "4630K"``, ``number(4_630_000, "raw") == "4630000"``; ``binary`` for bytes
    (``"M"`` writes MiB)."""
    if scale == "auto":
        return human(value, binary)
    if scale == "raw":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    rank = SCALES.index(scale) - 1
    scaled = value / (1024 if binary else 1000) ** rank
    suffix = (_BINARY if binary else _DECIMAL)[rank]
    # 3 significant digits, or every digit of the integer part: 0.000448M, 0.0938M, 4.63M, 46.3M, 463M, 4632M
    rounded = float(f"{scaled:.3g}")
    if abs(rounded) >= 100:
        return f"{scaled:.0f}{suffix}"
    digits = 0 if rounded == 0 else min(2 - math.floor(math.log10(abs(rounded))), 9)
    return f"{rounded:.{digits}f}{suffix}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def table(header: list[str], rows: list[list[str]], markdown: bool = False, width: int | None = None,
          close: set[int] = frozenset()) -> str:
    """A fixed-width table (first two columns left-aligned, numbers right-aligned) or a markdown table.

    ``width``: the widest line allowed; the two text columns (names, types) are shortened with ``…`` to fit,
    widest first, never below 8 characters (numbers are never cut). ``close``: the columns set one space, not two,
    after the one before them (a ratio after its value).
    """
    if markdown:
        rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"
        lines = ["| " + " | ".join(header) + " |", rule]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    gaps = ["" if i == 0 else " " if i in close else "  " for i in range(len(widths))]
    if width is not None:
        excess = sum(widths) + sum(map(len, gaps)) - width
        while excess > 0:
            i = 0 if widths[0] >= widths[1] else 1
            if widths[i] <= 8:
                break
            widths[i] -= 1
            excess -= 1

    def line(cells):
        cells = [_clip(c, w) if i < 2 else c for i, (c, w) in enumerate(zip(cells, widths))]
        return "".join(gap + (c.ljust(w) if i < 2 else c.rjust(w))
                       for i, (gap, c, w) in enumerate(zip(gaps, cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
