"""Storage: SQLAlchemy models, engine set-up, Alembic migrations, named node counters and the metric revision."""

from node.store.all_models import ALL_METADATA
from node.store.audit_models import ACTION_MAX, ACTOR_MAX, RESULT_MAX, AuditLogEntry
from node.store.counters import (
    REVISION_COUNTER,
    compare_and_set_counter,
    counter_value,
    counter_values,
    current_revision,
    dialect_insert,
    from_micros,
    increment_counter,
    lock_revision,
    locked_revision,
    lower_counter,
    next_revision,
    set_counter,
    to_micros,
)
from node.store.database import alembic_config, has_schema, make_engine, migrate
from node.store.federation_models import ChildBucket
from node.store.models import Base, Case, Complaint, Completion, Evaluation, Item, Payment, SpecialProcedure, Step
from node.store.supervision_models import Alert, MetricBucket, NodeCounter, Notification, OperatorNotice

__all__ = [
    "ACTION_MAX",
    "ACTOR_MAX",
    "ALL_METADATA",
    "RESULT_MAX",
    "REVISION_COUNTER",
    "Alert",
    "AuditLogEntry",
    "Base",
    "Case",
    "ChildBucket",
    "Complaint",
    "Completion",
    "Evaluation",
    "Item",
    "MetricBucket",
    "NodeCounter",
    "Notification",
    "OperatorNotice",
    "Payment",
    "SpecialProcedure",
    "Step",
    "alembic_config",
    "compare_and_set_counter",
    "counter_value",
    "counter_values",
    "current_revision",
    "dialect_insert",
    "from_micros",
    "has_schema",
    "increment_counter",
    "lock_revision",
    "locked_revision",
    "lower_counter",
    "make_engine",
    "migrate",
    "next_revision",
    "set_counter",
    "to_micros",
]
