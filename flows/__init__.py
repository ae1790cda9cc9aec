"""Prefect flows of t2c-monitor: thin compositions of library calls (see t2c_monitor).

Prefect keeps its local state (the ephemeral API database, logs) under ``$T2C_HOME/prefect``
unless ``PREFECT_HOME`` is set, so everything t2c-monitor writes locally lives in one place.
"""

import os as _os

from t2c_monitor.settings import get_settings as _get_settings

_os.environ.setdefault("PREFECT_HOME", str(_get_settings().home / "prefect"))
