"""Connecting to PostgreSQL: URL handling, fail-fast reachability and the pgvector extension."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from t2c_monitor import redaction
from t2c_monitor.errors import ConfigError, DatabaseUnavailableError, ExtensionMissingError

DRIVER = "postgresql+psycopg2"

PGVECTOR_INSTALL_HINT = (
    "Install pgvector on that server: Debian/Ubuntu `apt install postgresql-<major>-pgvector`, "
    "Docker image `pgvector/pgvector:pg16` (as in docker-compose.yml), or build it from "
    "https://github.com/pgvector/pgvector. Or unset T2C_DATABASE_URL to use the embedded "
    "PostgreSQL, which ships with pgvector."
)


def normalise_url(url: str) -> str:
    """Use the psycopg2 driver for plain ``postgresql://`` / ``postgres://`` URLs.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which we do not install.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with little context
        detail = redaction.redact(str(exc).replace(url, "<the URL>"))
        raise ConfigError(f"T2C_DATABASE_URL is not a database URL: {mask_url(url)!r} ({detail}).") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(
            f"T2C_DATABASE_URL must point at PostgreSQL, got {parsed.get_backend_name()!r} "
            f"in {mask_url(url)!r}: use postgresql://user:password@host:5432/dbname"
        )
    return parsed.set(drivername=DRIVER).render_as_string(hide_password=False)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` wherever it is (user info, ``?password=``,
    ``sslpassword=``, any credential-like parameter), safe for logs and messages."""
    try:
        make_url(url)
    except Exception:
        return "<unparseable URL>"
    return redaction.mask_url(url)


def make_engine(url: str, *, connect_timeout_s: int = 5) -> Engine:
    """An engine for ``url`` whose first connection fails within ``connect_timeout_s``."""
    return create_engine(
        normalise_url(url),
        pool_pre_ping=True,
        connect_args={"connect_timeout": connect_timeout_s, "application_name": "t2c-monitor"},
    )


def check_reachable(engine: Engine) -> None:
    """Open one connection now, so an unreachable server fails fast with a useful message."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except ProgrammingError as exc:  # libpq refused the URL itself: an option it does not know, a bad value
        reason = redaction.redact(str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc))
        raise ConfigError(f"T2C_DATABASE_URL {mask_url(str(engine.url))} is not a URL PostgreSQL accepts: {reason}. "
                          "Keep to libpq's connection parameters (host, port, dbname, user, password, sslmode, ...)."
                          ) from None
    except OperationalError as exc:
        reason = redaction.redact(str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc))
        raise DatabaseUnavailableError(
            f"Cannot connect to PostgreSQL at {mask_url(str(engine.url))}: {reason}. "
            "Check that the server is running and that host, port, database name and credentials in "
            "T2C_DATABASE_URL are right (docker compose up -d db starts the bundled one); "
            "unset T2C_DATABASE_URL to use the embedded PostgreSQL instead."
        ) from None


def ensure_vector_extension(conn: Connection) -> str:
    """Create the pgvector extension if needed and return its version.

    Raises ``ExtensionMissingError`` saying how to install pgvector when the server lacks it.
    """
    installed = conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
    if installed:
        return installed
    available = conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).scalar()
    if not available:
        raise ExtensionMissingError(
            f"The PostgreSQL server at {mask_url(str(conn.engine.url))} has no pgvector extension. "
            + PGVECTOR_INSTALL_HINT
        )
    try:
        with conn.begin_nested():
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except ProgrammingError as exc:
        raise ExtensionMissingError(
            f"pgvector is available on {mask_url(str(conn.engine.url))} but this user may not create it "
            f"({str(exc.orig).strip()}). Ask a superuser to run `CREATE EXTENSION vector;` in that database."
        ) from None
    return conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar_one()


def server_versions(engine: Engine) -> tuple[str, str | None]:
    """The PostgreSQL server version and the installed pgvector version (None if not installed)."""
    with engine.connect() as conn:
        pgvector = conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        server = conn.execute(text("SHOW server_version")).scalar()
    return str(server), pgvector
