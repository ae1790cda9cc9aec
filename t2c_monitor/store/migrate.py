"""Schema changes through Alembic, the only way the schema changes.

Every entry point runs under a PostgreSQL advisory lock, so two processes that start at once
(two ``t2c demo`` runs, a flow and the CLI) never migrate the same database concurrently.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from t2c_monitor.errors import ConfigError
from t2c_monitor.store.engine import ensure_vector_extension

# an installed wheel carries the revisions inside the package (setup.py copies them there); a
# source checkout (editable install) uses the top-level migrations/ itself
_PACKAGED = Path(__file__).resolve().parent / "_migrations"
MIGRATIONS_DIR = _PACKAGED if (_PACKAGED / "env.py").exists() else Path(__file__).resolve().parents[2] / "migrations"
_LOCK_KEY = 0x7432_636D  # "t2cm": the advisory lock id that serialises migrations


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Per-width HNSW indexes (``hnsw_*``) are built at run time by ``store.vectors``, not by revisions."""
    return not (type_ == "index" and name is not None and name.startswith("hnsw_"))


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at ``migrations/``, optionally bound to an open connection."""
    if not (MIGRATIONS_DIR / "env.py").exists():
        raise ConfigError(
            f"Alembic migrations not found at {MIGRATIONS_DIR}: this installation of t2c-monitor is incomplete. "
            "Reinstall it from a wheel built by its setup (`pip wheel .`), or from a source checkout."
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        conn.commit()
        try:
            yield conn
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            conn.commit()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create the pgvector extension if needed, then migrate up to ``revision``."""
    with _locked(engine) as conn:
        ensure_vector_extension(conn)
        conn.commit()
        with _revision_errors(revision):
            command.upgrade(alembic_config(conn), revision)
        conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate down to ``revision`` (``base`` removes every table, ``-1`` goes one step)."""
    with _locked(engine) as conn:
        with _revision_errors(revision):
            command.downgrade(alembic_config(conn), revision)
        conn.commit()


@contextmanager
def _revision_errors(revision: str) -> Iterator[None]:
    """alembic's refusal of a revision it cannot find or go to, as our error (nothing has changed then)."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        raise ConfigError(f"Cannot migrate to revision {revision[:80]!r}: {str(exc)[:200]}. `t2c db status` shows "
                          "the current and head revisions; `base`, `head`, a revision id or -1 are accepted.") from None


def new_revision(engine: Engine, message: str) -> str:
    """Autogenerate a revision from the difference between the models and a database at head."""
    upgrade(engine)
    with _locked(engine) as conn:
        script = command.revision(alembic_config(conn), message=message, autogenerate=True)
    return str(script.path)  # type: ignore[union-attr]


def heads() -> list[str]:
    return list(ScriptDirectory.from_config(alembic_config()).get_heads())


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str
    at_head: bool


def status(engine: Engine) -> SchemaStatus:
    (head,) = heads()
    now = current(engine)
    return SchemaStatus(current=now, head=head, at_head=now == head)
