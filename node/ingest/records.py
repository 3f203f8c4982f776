"""Records between the ingest stages: a validated row, and a batch's (line, row) and (line, kind, row) entries."""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]
Pending = tuple[int, Row]  # (line, validated row)
Tagged = tuple[int, str, Row]  # (line, kind, validated row)
