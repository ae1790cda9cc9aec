"""Alembic environment: runs revisions on the connection t2c_monitor.store.migrate hands over."""

from __future__ import annotations

import pgvector.sqlalchemy  # noqa: F401  registers the `vector` type for reflection
from alembic import context

from t2c_monitor.store.migrate import include_object
from t2c_monitor.store.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from t2c_monitor.settings import get_settings
        from t2c_monitor.store.database import open_database

        engine = open_database(get_settings(), migrate_to_head=False).engine
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
        engine.dispose()
        return
    _run(connection)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        compare_type=True,
        compare_server_default=False,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run `t2c db upgrade` against a database.")
run_migrations_online()
