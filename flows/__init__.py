"""Prefect flows of t2c-monitor: thin compositions of library calls (see t2c_monitor).

Unless already set, Prefect keeps its local state (the ephemeral API database, logs) under
``$T2C_HOME/prefect``, so everything t2c-monitor writes locally lives in one place, and waits up
to two minutes for its ephemeral API server: Prefect's default 20 s is too short on a busy
two-core machine, where the first start also migrates Prefect's database. Prefect's telemetry
heartbeat is off: our machines reach no network, and a monitoring service should not phone home
unasked.
"""

import os as _os

from t2c_monitor.settings import get_settings as _get_settings

if "PREFECT_HOME" not in _os.environ:
    _prefect_home = _get_settings().home / "prefect"
    _prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect creates it without its parents
    _os.environ["PREFECT_HOME"] = str(_prefect_home)
_os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
_os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
