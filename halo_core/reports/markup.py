"""What every page shares: number formats, bin labels, embedded images, the report style. No matplotlib
here, so halo_assets labels a bin without importing it."""

from __future__ import annotations

import base64
import html
import math

# The evaluation and validation reports' style: one column, tables ruled, images never wider than the page.
REPORT_STYLE = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}td,th{padding:2px 10px;"
                "border-bottom:1px solid #ddd}\nimg{max-width:100%}")


def fmt(value, spec: str = ".4f", missing: str = "not measurable") -> str:
    """``value`` formatted with ``spec``; ``missing`` where it is None or NaN."""
    return missing if value is None or value != value else format(value, spec)  # value != value: NaN


def bin_label(lo: float, hi: float | None) -> str:
    """'1-1.5' or '20+' (the open last bin: hi is inf in memory, null in report.json)."""
    return f"{lo:g}+" if hi is None or math.isinf(hi) else f"{lo:g}-{hi:g}"


def img_tag(data: bytes, alt: str) -> str:
    """An HTML image of the PNG ``data`` itself (a self-contained page)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
