"""Supervision activity counts (node.supervision.activity): additive per (day, metric, kind), under a revision."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.engine import Engine

from node.store import current_revision
from node.supervision import activity_totals, record_activity


def test_counts_add_up_per_day_metric_and_kind(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as conn:
        before = current_revision(conn)
        record_activity(conn, date(2026, 3, 2), "directives_received", "supervise")
        record_activity(conn, date(2026, 3, 2), "directives_received", "supervise")
        revision = record_activity(conn, date(2026, 4, 1), "measures_recorded", "诫勉谈话", 3)
        assert revision > before
    with migrated_engine.connect() as conn:
        assert activity_totals(conn) == {("directives_received", "supervise"): 2, ("measures_recorded", "诫勉谈话"): 3}
        assert activity_totals(conn, day_to=date(2026, 3, 31)) == {("directives_received", "supervise"): 2}


def test_an_unknown_metric_is_a_programming_error(migrated_engine: Engine) -> None:
    with migrated_engine.begin() as conn, pytest.raises(ValueError, match="unknown activity metric"):
        record_activity(conn, date(2026, 3, 2), "directives_lost", "supervise")
