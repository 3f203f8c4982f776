"""A bulletin as a file: xlsx (charts native to Excel), csv (UTF-8 with BOM or GB18030) or print-ready html.

The web console offers the same bytes (``bulletin_file``); ``supnet report`` writes them to ``--out``.
"""

from __future__ import annotations

import io

from node.bulletin.csv_file import csv_bytes, csv_text
from node.bulletin.html import html_page
from node.bulletin.model import Bulletin
from node.bulletin.sections import bulletin_sections
from node.bulletin.xlsx import write_xlsx
from node.errors import InvalidArgumentError

__all__ = ["FORMATS", "bulletin_file", "bulletin_html", "bulletin_title"]

FORMATS = ("xlsx", "csv", "html")


def bulletin_title(bulletin: Bulletin) -> str:
    """广东省（gd）2026年11月电子监察通报."""
    unit = f"{bulletin.node_name}（{bulletin.node_id}）" if bulletin.node_name else bulletin.node_id
    return f"{unit}{bulletin.period.title}电子监察通报"


def bulletin_html(bulletin: Bulletin) -> str:
    """The print-ready page."""
    return html_page(
        bulletin_sections(bulletin),
        title=bulletin_title(bulletin),
        unit=f"{bulletin.node_name} {bulletin.node_id}".strip(),
        period=f"{bulletin.period.title}（{bulletin.period.first_day} 至 {bulletin.period.last_day}）",
        generated_at=bulletin.generated_at,
        sources=bulletin.sources,
    )


def bulletin_file(bulletin: Bulletin, fmt: str, *, encoding: str = "utf-8") -> bytes:
    """The bulletin in ``fmt`` (xlsx, csv or html) as bytes; ``encoding`` applies to csv only."""
    if fmt == "xlsx":
        buffer = io.BytesIO()
        write_xlsx(bulletin_sections(bulletin), buffer)
        return buffer.getvalue()
    if fmt == "csv":
        return csv_bytes(csv_text(bulletin_sections(bulletin)), encoding)
    if fmt == "html":
        return bulletin_html(bulletin).encode("utf-8")
    raise InvalidArgumentError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
