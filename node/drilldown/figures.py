"""Drill-down figures: subtree summaries (by child, item, day or month) and the ranking of children by a metric.

Counters are additive sums (own ``metric_buckets`` plus each child's latest state in ``child_buckets``);
rates are derived by whoever shows them. Completeness says how much of the subtree has reported. Supervision
activity (directives by kind, accountability measures by kind) is summed the same way from ``activity_counts`` and
``child_activity_counts`` over the requested days: per row of the by-child summary, and the directives-overdue ranking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from functools import cache
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.sql.elements import ColumnElement

from federation import COUNTER_FIELDS, InvalidArgumentError
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import Completeness, Counters
from node.app import Node
from node.drilldown.query_terms import day_range, decode_page_token, encode_page_token, page_size_of, to_ms
from node.reporting import (
    ChildStatus,
    catalogue_message,
    child_sums,
    children_catalogues,
    children_status,
    subtree_completeness,
)
from node.store import (
    ActivityCount,
    ChildActivityCount,
    ChildBucket,
    Item,
    MetricBucket,
    current_revision,
    month_start_sql,
)
from node.supervision import CatalogueFigures, catalogue_figures

SUMMARY_DEFAULT_PAGE_SIZE = 1000
SUMMARY_MAX_PAGE_SIZE = 5000

GROUP_CHILD = dd.SUMMARY_GROUP_BY_CHILD
GROUP_ITEM = dd.SUMMARY_GROUP_BY_ITEM
GROUP_DAY = dd.SUMMARY_GROUP_BY_DAY
GROUP_MONTH = dd.SUMMARY_GROUP_BY_MONTH
# Audit only (own_from_records): rows keyed "YYYY-MM-DD|basic_code", verify's two groupings from one recomputation.
GROUP_DAY_ITEM = dd.SUMMARY_GROUP_BY_DAY_ITEM
_COUNTER_NAMES = frozenset(COUNTER_FIELDS)

CounterDict = dict[str, int]
ActivityDict = dict[tuple[str, str], int]


# --- counters -----------------------------------------------------------------------------------


def _zero_counters() -> CounterDict:
    return dict.fromkeys(COUNTER_FIELDS, 0)


def _add_into(total: CounterDict, values: Mapping[str, Any]) -> None:
    for name in COUNTER_FIELDS:
        total[name] += int(values[name] or 0)


def _add_sparse(total: CounterDict, values: Mapping[str, int]) -> None:
    """Add values into total, both holding only some counters (recomputed own figures)."""
    for name, value in values.items():
        total[name] = total.get(name, 0) + value


def _counters(values: Mapping[str, int]) -> Counters:
    return Counters(**{name: int(values[name]) for name in COUNTER_FIELDS if values.get(name)})


@cache
def _sum_columns(table: Any) -> tuple[ColumnElement[Any], ...]:
    # Built once per table: 30 coalesce(sum()) expressions cost ~1.5 ms to construct, more than the query they
    # sum on a street (measured); SQL expressions are immutable, so statements may share them.
    return tuple(func.coalesce(func.sum(getattr(table, name)), 0).label(name) for name in COUNTER_FIELDS)


def _counter_dict(values: Sequence[Any]) -> CounterDict:
    """The counters of a row selected as (*_sum_columns), in COUNTER_FIELDS order, by position (no mapping)."""
    return dict(zip(COUNTER_FIELDS, map(int, values), strict=True))


# --- children and completeness ------------------------------------------------------------------


def _completeness_of(status: ChildStatus) -> Completeness:
    return Completeness(
        nodes_in_subtree=status.nodes_in_subtree, nodes_reported_in_window=status.nodes_reported_in_window
    )


def _subtree_completeness(statuses: Sequence[ChildStatus]) -> Completeness:
    total = subtree_completeness(statuses)
    return Completeness(
        nodes_in_subtree=total.nodes_in_subtree, nodes_reported_in_window=total.nodes_reported_in_window
    )


def _last_report_ms(node: Node, status: ChildStatus | None) -> int:
    if status is None or status.last_received_at is None:
        return 0
    return to_ms(status.last_received_at, node.tz)


# --- supervision activity -----------------------------------------------------------------------


def _activity_by_source(conn: Connection, request: dd.SummaryRequest | dd.RankingRequest) -> dict[str, ActivityDict]:
    """Activity over the request's days per (metric, kind): own under "", each child's latest under its id."""
    start, end = day_range(request.day_from, request.day_to)
    found: dict[str, ActivityDict] = {}
    sources: tuple[tuple[Any, Any], ...] = ((ActivityCount, None), (ChildActivityCount, ChildActivityCount.child_id))
    for table, source_key in sources:
        keys = [table.metric, table.kind] if source_key is None else [source_key, table.metric, table.kind]
        statement = select(*keys, func.sum(table.count))
        if start:
            statement = statement.where(table.day >= start)
        if end:
            statement = statement.where(table.day <= end)
        for row in conn.execute(statement.group_by(*keys)):
            *source, metric, kind, count = row
            values = found.setdefault(str(source[0]) if source else "", {})
            values[(metric, kind)] = values.get((metric, kind), 0) + int(count or 0)
    return found


def _activity_messages(values: Mapping[tuple[str, str], int]) -> list[dd.ActivityTotal]:
    return [
        dd.ActivityTotal(metric=metric, kind=kind, count=count)
        for (metric, kind), count in sorted(values.items())
        if count
    ]


# --- summary ------------------------------------------------------------------------------------


def _bucket_filters(table: Any, request: dd.SummaryRequest | dd.RankingRequest) -> list[ColumnElement[bool]]:
    start, end = day_range(request.day_from, request.day_to)
    conditions: list[ColumnElement[bool]] = []
    if start:
        conditions.append(table.day >= start)
    if end:
        conditions.append(table.day <= end)
    if request.basic_code:
        conditions.append(table.basic_code == request.basic_code)
    item_type = getattr(request, "item_type_code", "")
    if item_type:
        conditions.append(table.item_type_code == item_type)
    return conditions


def _own_grouped(conn: Connection, request: dd.SummaryRequest | dd.RankingRequest, key: Any) -> dict[str, CounterDict]:
    conditions = _bucket_filters(MetricBucket, request)
    statement = select(key.label("key"), *_sum_columns(MetricBucket)).where(*conditions).group_by(key)
    return {str(row[0]): _counter_dict(row[1:]) for row in conn.execute(statement)}


def _own_total(conn: Connection, request: dd.SummaryRequest | dd.RankingRequest) -> CounterDict:
    statement = select(*_sum_columns(MetricBucket)).where(*_bucket_filters(MetricBucket, request))
    return _counter_dict(conn.execute(statement).one())


def _children_grouped(
    conn: Connection, request: dd.SummaryRequest | dd.RankingRequest, group: str
) -> dict[str, CounterDict]:
    """Σ of the children's buckets with the request's filters, by child_id, basic_code, month ('YYYY-MM') or day.

    All but days read whole months from the children's month roll-up (node.reporting.child_sums): the same sums.
    """
    if group == "day":
        conditions = _bucket_filters(ChildBucket, request)
        statement = select(ChildBucket.day.label("key"), *_sum_columns(ChildBucket)).where(*conditions)
        statement = statement.group_by(ChildBucket.day)
        rows = conn.execute(statement)
        return {str(row[0]): _counter_dict(row[1:]) for row in rows}
    start, end = day_range(request.day_from, request.day_to)
    sums = child_sums(
        conn,
        (group,),
        day_from=start,
        day_to=end,
        basic_code=request.basic_code,
        item_type_code=getattr(request, "item_type_code", ""),
    )
    return {key[0]: values for key, values in sums.items()}


def own_counters_from_records(node: Node, request: dd.SummaryRequest) -> dict[tuple[date, str], CounterDict]:
    """The node's own counters recomputed from its raw records, per (day, basic code), filters applied (audit).

    Each bucket holds its non-zero counters only.
    """
    from node.supervision import recompute_buckets

    start, end = day_range(request.day_from, request.day_to)
    result: dict[tuple[date, str], CounterDict] = {}
    with node.engine.connect() as conn:
        items = {row.implementation_code: (row.basic_code, row.type_code) for row in conn.execute(select(Item))}
        recomputed = recompute_buckets(conn, node.calendar)
    for (day, _department, implementation_code), values in recomputed.items():
        basic_code, type_code = items.get(implementation_code, ("", ""))
        if (start and day < start) or (end and day > end):
            continue
        if request.basic_code and basic_code != request.basic_code:
            continue
        if request.item_type_code and type_code != request.item_type_code:
            continue
        # Sparse: only the counters recomputed non-zero (an audit answers hundreds of rows of 30 counters each).
        total = result.setdefault((day, basic_code), {})
        for name, value in values.items():
            if name in _COUNTER_NAMES:
                total[name] = total.get(name, 0) + int(value)
    return result


def _fold_records(recomputed: Mapping[tuple[date, str], CounterDict], group_by: int) -> dict[str, CounterDict]:
    if group_by == GROUP_DAY_ITEM:  # one row per recomputed (day, item): nothing to fold
        return {f"{day.isoformat()}|{basic_code}": values for (day, basic_code), values in recomputed.items()}
    grouped: dict[str, CounterDict] = {}
    for (day, basic_code), values in recomputed.items():
        if group_by == GROUP_ITEM:
            key = basic_code
        elif group_by == GROUP_MONTH:
            key = day.isoformat()[:7]
        else:
            key = day.isoformat()
        _add_sparse(grouped.setdefault(key, {}), values)
    return grouped


def _item_labels(conn: Connection, codes: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    statement = (
        select(Item.basic_code, func.min(Item.name)).where(Item.basic_code.in_(wanted)).group_by(Item.basic_code)
    )
    return {str(code): str(name) for code, name in conn.execute(statement)}


def answer_summary(
    node: Node, request: dd.SummaryRequest, page_size: int, page_token: str, *, own_from_records: bool = False
) -> tuple[dd.SummaryAnswer, str]:
    """Subtree totals grouped by child, item, day or month; with ``own_from_records`` only own data, recomputed."""
    group_by = request.group_by or GROUP_CHILD
    if group_by not in (GROUP_CHILD, GROUP_ITEM, GROUP_DAY, GROUP_MONTH, GROUP_DAY_ITEM):
        raise InvalidArgumentError(f"summary group_by {group_by} is not one of CHILD, ITEM, DAY, MONTH, DAY_ITEM")
    if own_from_records and group_by == GROUP_CHILD:
        raise InvalidArgumentError(
            "a summary recomputed from records covers own data only: group by item, day or month"
        )
    if group_by == GROUP_DAY_ITEM and not own_from_records:
        raise InvalidArgumentError("grouping by day and item is for a summary recomputed from records (audit) only")
    after = decode_page_token("summary", page_token)
    size = page_size_of(page_size, SUMMARY_DEFAULT_PAGE_SIZE, SUMMARY_MAX_PAGE_SIZE)
    extra: dict[str, dd.SummaryRow] = {}
    registers: CatalogueFigures | None = None
    activity: ActivityDict | None = None
    with node.engine.connect() as conn:
        # Recomputed from records: own data only, so the children's freshness is not read.
        states = [] if own_from_records else children_status(node, conn)
        completeness = _subtree_completeness(states)
        revision = 0
        if own_from_records:
            rows = _fold_records(own_counters_from_records(node, request), group_by)
            completeness = Completeness(nodes_in_subtree=1, nodes_reported_in_window=1)
            # Read after the recomputation: every change it saw is at or below this revision (verify compares it
            # with the latest report's up_to_revision: above it, the node has changes it has not reported yet).
            revision = current_revision(conn)
        elif group_by == GROUP_CHILD:
            rows = _children_grouped(conn, request, "child_id")
            rows[node.config.id] = _own_total(conn, request)
            for state in states:
                rows.setdefault(state.child_id, _zero_counters())
                extra[state.child_id] = dd.SummaryRow(
                    completeness=_completeness_of(state),
                    last_report_sequence=state.last_sequence or 0,
                    last_report_at_ms=_last_report_ms(node, state),
                )
            extra[node.config.id] = dd.SummaryRow(
                label=node.config.name, completeness=Completeness(nodes_in_subtree=1, nodes_reported_in_window=1)
            )
            # Item registers are state, not bucketed by day: each row shows its subtree's as last reported.
            registers = catalogue_figures(conn, node.now())
            extra[node.config.id].catalogue.CopyFrom(catalogue_message(registers))
            for child_id, figures in children_catalogues(conn).items():
                registers.add(figures)
                extra.setdefault(child_id, dd.SummaryRow()).catalogue.CopyFrom(catalogue_message(figures))
            # Directives and accountability measures of each row's subtree over the requested days.
            activity = {}
            for source, counts in _activity_by_source(conn, request).items():
                row_key = source or node.config.id
                rows.setdefault(row_key, _zero_counters())
                extra.setdefault(row_key, dd.SummaryRow()).activity.extend(_activity_messages(counts))
                for metric_kind, count in counts.items():
                    activity[metric_kind] = activity.get(metric_kind, 0) + count
        else:
            if group_by == GROUP_MONTH:
                # Summed per month in the database: a month's first day as the key, shown as 'YYYY-MM'.
                by_month = _own_grouped(conn, request, month_start_sql(conn, MetricBucket.day))
                rows = {key[:7]: values for key, values in by_month.items()}
            else:
                column_key = MetricBucket.basic_code if group_by == GROUP_ITEM else MetricBucket.day
                rows = _own_grouped(conn, request, column_key)
            child_group = {GROUP_ITEM: "basic_code", GROUP_DAY: "day", GROUP_MONTH: "month"}[group_by]
            for key, values in _children_grouped(conn, request, child_group).items():
                _add_into(rows.setdefault(key, _zero_counters()), values)
        labels = _item_labels(conn, rows) if group_by == GROUP_ITEM else {}
    total = _zero_counters()
    for values in rows.values():
        if own_from_records:  # sparse rows
            _add_sparse(total, values)
        else:
            _add_into(total, values)
    keys = sorted(rows)
    if after:
        keys = [key for key in keys if key > str(after[0])]
    page, more = keys[:size], len(keys) > size
    answer = dd.SummaryAnswer(
        group_by=group_by, total=_counters(total), completeness=completeness, metric_revision=revision
    )
    if registers is not None:
        answer.catalogue.CopyFrom(catalogue_message(registers))
    if activity is not None:
        answer.activity.extend(_activity_messages(activity))
    for key in page:
        row = answer.rows.add()
        if key in extra:
            row.CopyFrom(extra[key])
        row.key = key
        row.label = row.label or labels.get(key, "")
        row.counters.CopyFrom(_counters(rows[key]))
    return answer, encode_page_token("summary", [page[-1]]) if more and page else ""


# --- ranking ------------------------------------------------------------------------------------

# metric -> (a rate of RATE_DEFINITIONS, or None and the counter ranked as a plain count; higher is better).
# Rates come from the one definition every view uses (docs/domain.md §6).
_RANKING: dict[int, tuple[str | None, str | None, bool]] = {
    dd.RANKING_METRIC_EARLY_COMPLETION_RATE: ("early_rate", None, True),
    dd.RANKING_METRIC_ON_TIME_RATE: ("on_time_rate", None, True),
    dd.RANKING_METRIC_RETURN_RATE: ("return_rate", None, False),
    dd.RANKING_METRIC_SATISFACTION_RATE: ("satisfaction_rate", None, True),
    dd.RANKING_METRIC_COMPLAINT_ACCEPTANCE_RATE: ("complaint_acceptance_rate", None, True),
    dd.RANKING_METRIC_COMPLAINT_CLOSURE_RATE: ("complaint_closure_rate", None, True),
    dd.RANKING_METRIC_OPEN_OVERDUE_PROMISED: (None, "open_overdue_promised", False),
    dd.RANKING_METRIC_OPEN_OVERDUE_LEGAL: (None, "open_overdue_legal", False),
    dd.RANKING_METRIC_RED_CARDS: (None, "red_cards", False),
    dd.RANKING_METRIC_YELLOW_CARDS: (None, "yellow_cards", False),
}
# metric -> the activity metric ranked as a count over every kind (lower is better).
_ACTIVITY_RANKING: dict[int, str] = {dd.RANKING_METRIC_DIRECTIVES_OVERDUE: "directives_overdue"}


def metric_value(metric: int, values: Mapping[str, int]) -> tuple[float, int, int]:
    """(value, numerator, denominator) of a ranking metric; a count has denominator 0 and value = count."""
    from node.supervision import RATE_DEFINITIONS

    rate, count, _ = _RANKING[metric]
    if rate is None:
        numerator = int(values.get(count or "", 0))
        return float(numerator), numerator, 0
    numerator_of, denominator_of = RATE_DEFINITIONS[rate]
    numerator, denominator = numerator_of(values), denominator_of(values)
    return (numerator / denominator if denominator else 0.0), numerator, denominator


def answer_ranking(node: Node, request: dd.RankingRequest) -> tuple[dd.RankingAnswer, str]:
    """Rank the children (and this node's own data as one entry) by one derived metric; ties share a rank."""
    metric = request.metric or dd.RANKING_METRIC_EARLY_COMPLETION_RATE
    if metric == dd.RANKING_METRIC_SCORE:
        return answer_score_ranking(node, request), ""
    activity_metric = _ACTIVITY_RANKING.get(metric)
    if activity_metric is None and metric not in _RANKING:
        raise InvalidArgumentError(f"ranking metric {metric} is not known")
    if activity_metric is not None and request.basic_code:
        raise InvalidArgumentError(
            f"ranking metric {dd.RankingMetric.Name(metric)} is not counted per item: leave basic_code empty"
        )
    with node.engine.connect() as conn:
        states = {state.child_id: state for state in children_status(node, conn)}
        rows = _children_grouped(conn, request, "child_id")
        own = _own_total(conn, request)
        activity = _activity_by_source(conn, request) if activity_metric is not None else {}
    entries: list[dd.RankingRow] = []
    for node_id in sorted({*states, *rows, *(source for source in activity if source), node.config.id}):
        values = own if node_id == node.config.id else rows.get(node_id, _zero_counters())
        if activity_metric is None:
            value, numerator, denominator = metric_value(metric, values)
        else:
            counts = activity.get("" if node_id == node.config.id else node_id, {})
            numerator = sum(count for (name, _), count in counts.items() if name == activity_metric)
            value, denominator = float(numerator), 0
        state = states.get(node_id)
        entries.append(
            dd.RankingRow(
                node_id=node_id,
                label=node.config.name if node_id == node.config.id else "",
                value=value,
                numerator=numerator,
                denominator=denominator,
                counters=_counters(values),
                last_report_sequence=(state.last_sequence or 0) if state else 0,
                last_report_at_ms=_last_report_ms(node, state),
                stale=state is not None and state.state != "fresh",
            )
        )
    return rank_entries(metric, entries, worst_first=request.worst_first), ""


def rank_entries(
    metric: dd.RankingMetric.ValueType, entries: Sequence[dd.RankingRow], *, worst_first: bool = False
) -> dd.RankingAnswer:
    """Order ranking entries by a (non-score) metric's value, best first unless ``worst_first``; ties share a rank.

    Also how the asker of a subtree search ranks every node's own entry (e.g. all streets of a province).
    """
    if metric == dd.RANKING_METRIC_SCORE:
        is_rate, higher_is_better = True, True  # unscored (denominator 0) last, as answer_score_ranking does
    else:
        rate_name, _, higher_is_better = _RANKING.get(metric, (None, None, False))
        is_rate = rate_name is not None
    best_first = higher_is_better != worst_first

    def order(row: dd.RankingRow) -> tuple[int, float, str]:
        # A rate over nothing (e.g. no completed cases) cannot be compared: such entries go last.
        unrated = is_rate and row.denominator == 0
        return (1 if unrated else 0, -row.value if best_first else row.value, row.node_id)

    answer = dd.RankingAnswer(metric=metric)
    previous: tuple[int, float] | None = None
    rank = 0
    for position, entry in enumerate(sorted(entries, key=order), start=1):
        key = (1 if is_rate and entry.denominator == 0 else 0, round(entry.value, 12))
        if key != previous:
            rank = position
            previous = key
        row = answer.rows.add()
        row.CopyFrom(entry)
        row.rank = rank
    return answer


# --- ranking by efficiency score ----------------------------------------------------------------

MonthlyCounters = dict[str, dict[str, CounterDict]]


def _monthly_by_entry(conn: Connection, request: dd.RankingRequest, own_id: str) -> MonthlyCounters:
    """Entry (a child, or this node for its own buckets) → 'YYYY-MM' → summed counters, with the request's filters."""
    result: MonthlyCounters = {}
    start, end = day_range(request.day_from, request.day_to)
    sums = child_sums(
        conn,
        ("child_id", "month"),
        day_from=start,
        day_to=end,
        basic_code=request.basic_code,
        item_type_code=getattr(request, "item_type_code", ""),
    )
    for (child_id, month), values in sums.items():
        result.setdefault(child_id, {})[month] = values
    for month, values in _own_grouped(conn, request, month_start_sql(conn, MetricBucket.day)).items():
        result.setdefault(own_id, {})[month[:7]] = values
    return result


def answer_score_ranking(node: Node, request: dd.RankingRequest) -> dd.RankingAnswer:
    """Rank the children (and own data) by efficiency score, each scored from its own summed counters per month.

    Scores are never averaged across nodes: an entry's score comes from its rolled-up buckets (docs/domain.md §7),
    under this node's scheme. An entry with nothing to score (no activity) has denominator 0 and goes last.
    """
    from node.supervision import score_period

    scheme = node.config.scores
    with node.engine.connect() as conn:
        states = {state.child_id: state for state in children_status(node, conn)}
        monthly = _monthly_by_entry(conn, request, node.config.id)
    period = f"{request.day_from or '…'}..{request.day_to or '…'}"
    entries: list[tuple[bool, float, dd.RankingRow]] = []
    for node_id in sorted({*states, *monthly, node.config.id}):
        months = monthly.get(node_id, {})
        total = _zero_counters()
        for values in months.values():
            _add_into(total, values)
        score = score_period(node_id, period, months, scheme)
        state = states.get(node_id)
        row = dd.RankingRow(
            node_id=node_id,
            label=node.config.name if node_id == node.config.id else "",
            value=score.score if score else 0.0,
            numerator=score.cases_handled if score else 0,
            denominator=sum(month.weight for month in score.months) if score else 0,
            counters=_counters(total),
            last_report_sequence=(state.last_sequence or 0) if state else 0,
            last_report_at_ms=_last_report_ms(node, state),
            stale=state is not None and state.state != "fresh",
        )
        entries.append((score is None, round(row.value, 2), row))
    # Highest score first (lowest with worst_first); unscored entries last either way; ties share a rank (1, 1, 3).
    entries.sort(key=lambda e: (e[0], e[1] if request.worst_first else -e[1], e[2].node_id))
    answer = dd.RankingAnswer(metric=dd.RANKING_METRIC_SCORE)
    previous: tuple[bool, float] | None = None
    rank = 0
    for position, (unscored, value, row) in enumerate(entries, start=1):
        if (unscored, value) != previous:
            rank, previous = position, (unscored, value)
        row.rank = rank
        answer.rows.append(row)
    return answer
