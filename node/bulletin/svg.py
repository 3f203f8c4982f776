"""Charts as inline SVG, drawn here: the printed bulletin needs no script, no library and nothing fetched.

A ``column`` chart draws one group of vertical bars per row (a bar per series), a ``bar`` chart one horizontal bar
per row, first row on top (a ranking). Rate series are drawn on a 0–100 % axis.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from node.bulletin.tables import Chart, TableSpec

__all__ = ["svg_chart"]

PALETTE = ("#2f5597", "#c00000", "#ed7d31", "#70ad47", "#7f7f7f")
WIDTH = 680
FONT = 11


def _text_width(text: str, size: float = FONT) -> float:
    return sum(size if ord(char) >= 0x2E80 else size * 0.6 for char in text)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _label(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:.0f}%"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def _legend(table: TableSpec, chart: Chart, x: float, y: float) -> list[str]:
    parts = []
    for index, key in enumerate(chart.series):
        header = table.column(key).header
        parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{PALETTE[index % 5]}"/>')
        parts.append(f'<text x="{x + 14:.1f}" y="{y:.1f}" font-size="{FONT}">{escape(header)}</text>')
        x += 24 + _text_width(header)
    return parts


def _column_chart(table: TableSpec, chart: Chart, percent: bool) -> str:
    labels = [str(row.get(chart.category, "")) for row in table.rows]
    values = [[_number(row.get(key)) for key in chart.series] for row in table.rows]
    top = 1.0 if percent else _nice_max(max((v for group in values for v in group), default=0.0))
    longest = max((_text_width(label, 10) for label in labels), default=0.0)
    left, right, head = 56.0, 12.0, 44.0
    foot = min(170.0, longest * 0.72 + 16)
    height = 260.0 + foot
    plot_w, plot_h = WIDTH - left - right, height - head - foot
    parts = [f'<text x="{WIDTH / 2:.0f}" y="18" font-size="13" text-anchor="middle">{escape(chart.title)}</text>']
    parts += _legend(table, chart, left, 36)
    for tick in range(5):
        value = top * tick / 4
        y = head + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{WIDTH - right}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{_label(value, percent)}</text>'
        )
    group = plot_w / max(len(labels), 1)
    bar = min(group / (len(chart.series) + 1), 40.0)
    for index, (label, group_values) in enumerate(zip(labels, values, strict=True)):
        x0 = left + index * group + (group - bar * len(chart.series)) / 2
        for series, value in enumerate(group_values):
            h = plot_h * min(value / top, 1.0)
            x, y = x0 + series * bar, head + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{PALETTE[series % 5]}">'
                f"<title>{escape(label)}: {_label(value, percent)}</title></rect>"
            )
        cx, cy = left + index * group + group / 2, head + plot_h + 12
        parts.append(
            f'<text x="{cx:.1f}" y="{cy:.1f}" font-size="10" text-anchor="end" '
            f'transform="rotate(-45 {cx:.1f} {cy:.1f})">{escape(label)}</text>'
        )
    parts.append(
        f'<line x1="{left}" y1="{head + plot_h:.1f}" x2="{WIDTH - right}" y2="{head + plot_h:.1f}" stroke="#333"/>'
    )
    return _svg(parts, height, chart.title)


def _bar_chart(table: TableSpec, chart: Chart, percent: bool) -> str:
    key = chart.series[0]
    labels = [str(row.get(chart.category, "")) for row in table.rows]
    values = [_number(row.get(key)) for row in table.rows]
    top = 1.0 if percent else _nice_max(max(values, default=0.0))
    left = min(260.0, max((_text_width(label) for label in labels), default=0.0) + 12)
    right, head, row_h = 56.0, 30.0, 22.0
    height = head + row_h * len(labels) + 12
    plot_w = WIDTH - left - right
    parts = [f'<text x="{WIDTH / 2:.0f}" y="18" font-size="13" text-anchor="middle">{escape(chart.title)}</text>']
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = head + index * row_h
        w = plot_w * min(value / top, 1.0)
        parts.append(
            f'<text x="{left - 6:.1f}" y="{y + 15:.1f}" font-size="{FONT}" text-anchor="end">{escape(label)}</text>'
        )
        parts.append(
            f'<rect x="{left:.1f}" y="{y + 4:.1f}" width="{w:.1f}" height="{row_h - 8:.1f}" fill="{PALETTE[0]}"/>'
        )
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 15:.1f}" font-size="10">{_label(value, percent)}</text>')
    return _svg(parts, height, chart.title)


def _svg(parts: list[str], height: float, title: str) -> str:
    body = "\n".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'aria-label="{escape(title)}" font-family="inherit">\n{body}\n</svg>'
    )


def svg_chart(table: TableSpec, chart: Chart) -> str:
    """One chart of ``table`` as an SVG element ('' when the table has no rows)."""
    if not table.rows:
        return ""
    percent = all(table.column(key).kind == "rate" for key in chart.series)
    if chart.kind == "bar":
        return _bar_chart(table, chart, percent)
    return _column_chart(table, chart, percent)
