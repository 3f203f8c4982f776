"""The Alembic migrations build exactly the models' tables, idempotently, on SQLite and PostgreSQL."""

from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine

from node.store import Base, migrate


def test_migrations_create_every_model_table(migrated_engine: Engine) -> None:
    from node.store import ALL_METADATA

    tables = set(inspect(migrated_engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    for metadata in ALL_METADATA:
        assert set(metadata.tables) <= tables


def test_migrate_is_idempotent(migrated_engine: Engine) -> None:
    migrate(migrated_engine)
    with migrated_engine.connect() as conn:
        assert conn.execute(select(Base.metadata.tables["items"].c.implementation_code)).all() == []


def test_models_match_migrations(migrated_engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from node.store import ALL_METADATA

    with migrated_engine.connect() as conn:
        # Both metadatas at once: compared one by one, each would report the other's tables as extra.
        diff = compare_metadata(MigrationContext.configure(conn), list(ALL_METADATA))  # type: ignore[arg-type]
    assert diff == [], f"models and migrations differ; add an Alembic revision: {diff}"


def test_child_bucket_tables_list_the_counters_of_a_report_in_its_order() -> None:
    """Both child tables take their counters from one mixin; the keys stay first and child_buckets' revision last."""
    from federation import COUNTER_FIELDS
    from node.store import ChildBucket, ChildMonthBucket

    days = [column.name for column in ChildBucket.__table__.columns]
    months = [column.name for column in ChildMonthBucket.__table__.columns]
    assert days == ["child_id", "day", "basic_code", "item_type_code", *COUNTER_FIELDS, "revision"]
    assert months == ["child_id", "month", "basic_code", "item_type_code", *COUNTER_FIELDS]
