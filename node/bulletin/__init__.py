"""Report files: the periodic 电子监察通报 (bulletin) of a node and its subordinates, and tables as csv/xlsx/html.

Gathering (``gather_bulletin``) reads the figures into typed records (``Bulletin``); ``bulletin_sections`` lays them
out in Simplified Chinese; the writers turn sections into an xlsx workbook with native charts, CSV or a print-ready
HTML page. ``records_table`` + ``write_xlsx``/``csv_text`` are what every listing command's ``--format`` uses.
"""

from node.bulletin.csv_file import CSV_ENCODINGS, csv_bytes, csv_text
from node.bulletin.gather import LEVELS, AskingSource, FigureSource, LocalSource, gather_bulletin, row_activity
from node.bulletin.html import format_value, html_page
from node.bulletin.model import (
    ActivityCount,
    Bulletin,
    CardRow,
    DepartmentFigures,
    DepartmentScore,
    OverdueCase,
    Ranking,
    RankingEntry,
    UnitFigures,
)
from node.bulletin.output import FORMATS, bulletin_file, bulletin_html, bulletin_title
from node.bulletin.period import ReportPeriod, report_period
from node.bulletin.sections import ACTIVITY_LABELS, COUNTER_LABELS, RATE_LABELS, bulletin_sections
from node.bulletin.svg import svg_chart
from node.bulletin.tables import Chart, Column, Section, TableSpec, flatten_record, records_table
from node.bulletin.xlsx import sheet_name, text_width, write_xlsx

__all__ = [
    "ACTIVITY_LABELS",
    "COUNTER_LABELS",
    "CSV_ENCODINGS",
    "FORMATS",
    "LEVELS",
    "RATE_LABELS",
    "ActivityCount",
    "AskingSource",
    "Bulletin",
    "CardRow",
    "Chart",
    "Column",
    "DepartmentFigures",
    "DepartmentScore",
    "FigureSource",
    "LocalSource",
    "OverdueCase",
    "Ranking",
    "RankingEntry",
    "ReportPeriod",
    "Section",
    "TableSpec",
    "UnitFigures",
    "bulletin_file",
    "bulletin_html",
    "bulletin_sections",
    "bulletin_title",
    "csv_bytes",
    "csv_text",
    "flatten_record",
    "format_value",
    "gather_bulletin",
    "html_page",
    "records_table",
    "report_period",
    "row_activity",
    "sheet_name",
    "svg_chart",
    "text_width",
    "write_xlsx",
]
