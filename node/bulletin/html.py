"""Sections as one print-ready HTML page: A4, a page per section, system Chinese fonts, charts as inline SVG.

The page and its style are package data (``templates/bulletin.html``, ``templates/bulletin.css``); nothing is
fetched when it is opened or printed, and no script runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from importlib import resources
from string import Template
from typing import Any

from node.bulletin.svg import svg_chart
from node.bulletin.tables import Column, Section, TableSpec

__all__ = ["format_value", "html_page"]


def _template(name: str) -> str:
    return resources.files("node.bulletin").joinpath("templates", name).read_text(encoding="utf-8")


def format_value(value: Any, kind: str) -> str:
    """A value as a table shows it: counts with separators, rates as percentages, scores to two decimals."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "是" if value else "否"
    if kind == "rate" and isinstance(value, int | float):
        return f"{value * 100:.1f}%"
    if kind == "score" and isinstance(value, int | float):
        return f"{value:.2f}"
    if kind == "int" and isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cells(columns: Sequence[Column], record: Any, tag: str = "td") -> str:
    cells = []
    for column in columns:
        text = format_value(record.get(column.key), column.kind)
        # Numbers, the first column (the unit) and short words stay on one line.
        short = column is columns[0] or len(text) <= 6
        css = "num" if column.kind != "text" else ("key" if short else "")
        attribute = f' class="{css}"' if css else ""
        cells.append(f"<{tag}{attribute}>{escape(text)}</{tag}>")
    return "<tr>" + "".join(cells) + "</tr>"


def _table(spec: TableSpec) -> str:
    parts = [f"<h3>{escape(spec.title)}</h3>"]
    parts += [f'<figure class="chart">{svg}</figure>' for svg in (svg_chart(spec, c) for c in spec.charts) if svg]
    if spec.rows or spec.footer is not None:
        head = "".join(f"<th>{escape(column.header)}</th>" for column in spec.columns)
        body = "\n".join(_cells(spec.columns, record) for record in spec.rows)
        foot = f"<tfoot>{_cells(spec.columns, spec.footer)}</tfoot>" if spec.footer is not None else ""
        parts.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>{foot}\n</table>")
    if spec.note:
        parts.append(f'<p class="note">{escape(spec.note)}</p>')
    return "\n".join(parts)


def _section(section: Section) -> str:
    intro = "\n".join(f'<p class="intro">{escape(line)}</p>' for line in section.intro)
    tables = "\n".join(_table(table) for table in section.tables)
    heading = f"<h2>{escape(section.title)}</h2>"
    return f'<section class="page" id="{escape(section.key)}">\n{heading}\n{intro}\n{tables}\n</section>'


def html_page(
    sections: list[Section], *, title: str, unit: str, period: str, generated_at: str, sources: Sequence[str] = ()
) -> str:
    """The whole page: a cover header, one page per section, the sources the figures were checked against."""
    return Template(_template("bulletin.html")).substitute(
        title=escape(title),
        style=_template("bulletin.css"),
        unit=escape(unit),
        period=escape(period),
        generated_at=escape(generated_at),
        sections="\n".join(_section(section) for section in sections),
        sources="\n".join(f"<p>{escape(line)}</p>" for line in sources) or "<p>—</p>",
    )
