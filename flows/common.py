"""What every flow shares: retrying on I/O errors only, and our errors logged as messages.

A ``T2CError`` is a message for a person (what is wrong, what to do), so a flow or task run that
fails with one logs that message without Prefect's traceback, in ``t2c serve``'s output and in
the Prefect UI alike, as the CLI prints it; any other exception keeps its traceback.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from t2c_monitor.errors import DatabaseUnavailableError, T2CError
from t2c_monitor.redaction import add_redacting_filter

# a database that does not answer when a task opens it is DatabaseUnavailableError (a T2CError with
# the URL and what to check): it may be back by the next attempt, so it is retried like the rest
IO_ERRORS = (OSError, OperationalError, ConnectionError, TimeoutError, DatabaseUnavailableError)


_OPEN: dict[tuple[str | None, str], Any] = {}
"""One open database (one engine, one connection pool) per settings in this process, disposed at exit."""
_OPENING = threading.Lock()


def database(*, migrate: bool = False) -> Any:
    """The database of the settings, as every task opens it (``migrate``: bring the schema to head
    first; the first task of a run does, the rest trust it).

    Tasks share one engine per process (a served process runs tasks for days: an engine each would leave
    pools behind). A shared engine that no longer answers (the server restarted elsewhere) is disposed
    and opened afresh, so a retried task sees the database as it is now."""
    from t2c_monitor.settings import get_settings
    from t2c_monitor.store import migrate as migrations
    from t2c_monitor.store import open_database
    from t2c_monitor.store.engine import check_reachable

    settings = get_settings()
    key = (settings.database_url, str(settings.pgdata))
    with _OPENING:  # tasks run on threads: one engine per key, never two
        db = _OPEN.get(key)
        if db is not None:
            try:
                check_reachable(db.engine)
            except DatabaseUnavailableError:
                _OPEN.pop(key).engine.dispose()
                db = None
        if db is None:
            db = _OPEN[key] = open_database(migrate_to_head=migrate)
            return db
    if migrate:
        migrations.upgrade(db.engine)
    return db


@atexit.register
def _dispose_open_databases() -> None:
    for db in _OPEN.values():
        db.engine.dispose()
    _OPEN.clear()


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task only when it failed on I/O (disk, network, database connection), never on bad input."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, IO_ERRORS)


class UserErrorsWithoutTraceback(logging.Filter):
    """Drop the traceback of log records whose exception is a ``T2CError`` (its message says it all)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], T2CError):
            record.exc_info = None
            record.exc_text = None
        return True


def log_user_errors_without_traceback() -> None:
    """Add the filter to every handler Prefect's logging set up (once; idempotent)."""
    loggers = [logging.getLogger()] + [
        logger for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("prefect") and isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, UserErrorsWithoutTraceback) for f in handler.filters):
                handler.addFilter(UserErrorsWithoutTraceback())
            add_redacting_filter(handler)  # a credential in a message never reaches a log or Prefect's database


log_user_errors_without_traceback()  # flows import this module after prefect has configured its logging
