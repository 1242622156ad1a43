"""Numbers as people read them: as many digits as their size deserves, never `12.00`.

Text (tables, pages, the compare verdict) uses these; JSON keeps the precise values.
"""

from __future__ import annotations

import math


def number(value: float | int | None) -> str:
    """`1,234` / `56` / `12.3` / `1.8` / `0.042`: about three significant digits, with
    thousands separators and no trailing zeros."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude == 0:
        return "0"
    decimals = 1 if magnitude >= 10 else 2 if magnitude >= 1 else 1 - math.floor(math.log10(magnitude))
    return _trimmed(f"{value:.{decimals}f}")


def ratio(value: float) -> str:
    """A factor, to two significant digits: `1.9×`, `12×`, `0.55×`."""
    return f"{number(round(value) if value >= 10 else round(value, 1) if value >= 1 else value)}×"


def signed_mb(value: float) -> str:
    """A memory difference: `+270 MB`, `−12 MB`, `±0 MB`."""
    if round(value) == 0 and abs(value) < 0.5:
        return "±0 MB"
    sign = "+" if value > 0 else "−"
    return f"{sign}{number(abs(value))} MB"


def _trimmed(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text
