"""Number formatting and text charts shared by the assessment's renderers."""

from __future__ import annotations

from collections.abc import Sequence

SPARKS = "▁▂▃▄▅▆▇█"


def money(micro: float | None, currency: str | None = None) -> str:
    if micro is None:
        return "–"
    v = micro / 1_000_000
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 1:
        s = f"{v:,.2f}"
    elif v == 0:
        s = "0"
    else:
        s = f"{v:.4g}"
    return f"{s} {currency}" if currency else s


def ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms"


def pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def count(v: int | None) -> str:
    return "–" if v is None else f"{v:,}"


def sparkline(values: Sequence[float]) -> str:
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(int(v / top * (len(SPARKS) - 1) + 0.5), len(SPARKS) - 1)] for v in values)


def bar(value: float | None, top: float, width: int = 24) -> str:
    """A horizontal bar of eighth-blocks."""
    if value is None or top <= 0 or value <= 0:
        return ""
    eighths = round(value / top * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")
