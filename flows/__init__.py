"""Prefect flows of t2c-monitor: thin compositions of library calls (see t2c_monitor).

The ``t2c`` commands point Prefect at a server whose services run before they run a flow (this
home's local server, or ``PREFECT_API_URL``: ``t2c_monitor.prefect_server``). Code that imports
these flows without doing so (a script, a notebook) gets Prefect's temporary in-process server as
a fallback: for it, unless already set, Prefect keeps its client state under
``$T2C_HOME/prefect`` (so everything t2c-monitor writes locally lives in one place) and waits
``T2C_PREFECT_STARTUP_TIMEOUT_S`` for the server: Prefect's default 20 s is too short on a busy
two-core machine, where the first start also migrates Prefect's database. Prefect's telemetry is
off: our machines reach no network, and a monitoring service should not phone home unasked.
"""

import os as _os

from t2c_monitor.settings import get_settings as _get_settings

_settings = _get_settings()
if "PREFECT_HOME" not in _os.environ:
    _settings.prefect_dir.mkdir(parents=True, exist_ok=True)  # Prefect creates it without its parents
    _os.environ["PREFECT_HOME"] = str(_settings.prefect_dir)
_os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(_settings.prefect_startup_timeout_s))
_os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
