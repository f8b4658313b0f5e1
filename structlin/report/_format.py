"""Human units and plain-text / markdown tables."""

from __future__ import annotations

__all__ = ["human", "table"]

_DECIMAL = ("", "K", "M", "G", "T", "P")
_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi")


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


def table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """A fixed-width table (first two columns left-aligned, numbers right-aligned) or a markdown table."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
