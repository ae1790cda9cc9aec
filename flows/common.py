"""What every flow shares: retrying on I/O errors only, and the database of the settings."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

IO_ERRORS = (OSError, OperationalError, ConnectionError, TimeoutError)


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task only when it failed on I/O (disk, network, database connection), never on bad input."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, IO_ERRORS)
