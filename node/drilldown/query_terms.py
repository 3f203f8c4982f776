"""What every drill-down answer shares: day ranges of a request, page sizes and page tokens, times as Unix ms.

Page tokens are opaque to the requester: they name the answer kind and the last position served (keyset
paging), so a token of one kind cannot continue another.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from federation import InvalidArgumentError

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_EPOCH = datetime(1970, 1, 1)
_MILLISECOND = timedelta(milliseconds=1)


def to_ms(value: datetime, tz: ZoneInfo) -> int:
    """Unix milliseconds of a naive local date-time of the node (a zone it carries is ignored)."""
    wall = value.replace(tzinfo=None) if value.tzinfo is not None else value
    offset = tz.utcoffset(wall) or timedelta(0)
    # Integer arithmetic: exact (a float timestamp can be a millisecond off) and several times faster, which
    # counts when a page of cases converts four date-times per row on the drill-down path.
    return (wall - _EPOCH - offset) // _MILLISECOND


def _parse_day(text: str, field: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidArgumentError(f"{field} {text!r} is not a day YYYY-MM-DD") from exc


def day_range(day_from: str, day_to: str) -> tuple[date | None, date | None]:
    """The first and last day of an inclusive range (None: open); InvalidArgumentError if not days or reversed."""
    start = _parse_day(day_from, "day_from")
    end = _parse_day(day_to, "day_to")
    if start and end and start > end:
        raise InvalidArgumentError(f"day_from {day_from} is after day_to {day_to}")
    return start, end


def datetime_bounds(day_from: str, day_to: str) -> tuple[datetime | None, datetime | None]:
    """Half-open [start, end) date-time bounds of an inclusive day range."""
    start, end = day_range(day_from, day_to)
    lower = datetime.combine(start, datetime.min.time()) if start else None
    upper = datetime.combine(end + timedelta(days=1), datetime.min.time()) if end else None
    return lower, upper


def page_size_of(requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The page size to use: the default for 0, never above the maximum."""
    if requested <= 0:
        return default
    return min(requested, maximum)


def encode_page_token(kind: str, position: Sequence[Any]) -> str:
    """An opaque token naming the answer kind and the last position served (keyset paging)."""
    raw = json.dumps({"k": kind, "p": list(position)}, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii")


def decode_page_token(kind: str, token: str) -> list[Any] | None:
    """The position in a token from :func:`encode_page_token`; None for no token; error if it is not ours."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise InvalidArgumentError("page_token is not a token this node issued") from exc
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("p"), list):
        raise InvalidArgumentError(f"page_token does not belong to a {kind} query")
    position: list[Any] = data["p"]
    return position
