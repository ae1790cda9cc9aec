"""Opening the database the settings point at: external when configured, embedded otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from t2c_monitor.settings import Settings, get_settings
from t2c_monitor.store import migrate
from t2c_monitor.store.embedded import start_embedded
from t2c_monitor.store.engine import check_reachable, make_engine, mask_url


@dataclass
class Database:
    """An open database: its engine, a session factory, and where it came from."""

    engine: Engine
    embedded: bool
    sessions: sessionmaker[Session]

    @property
    def url(self) -> str:
        """The connection URL as libpq tools (psql, Grafana) take it, password masked."""
        return mask_url(self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions.begin() as session:
            yield session


def open_database(settings: Settings | None = None, *, migrate_to_head: bool = True) -> Database:
    """Connect to ``T2C_DATABASE_URL``, or start the embedded server, and bring the schema to head.

    An external URL that cannot be reached fails fast; it never falls back to the embedded server.
    """
    settings = settings or get_settings()
    embedded = settings.database_url is None
    url = start_embedded(settings.pgdata) if embedded else settings.database_url
    engine = make_engine(url, connect_timeout_s=settings.connect_timeout_s)
    check_reachable(engine)
    if migrate_to_head:
        migrate.upgrade(engine)
    return Database(engine=engine, embedded=embedded, sessions=sessionmaker(engine, expire_on_commit=False))
