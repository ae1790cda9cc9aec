"""Everything that talks SQL: the schema, connections, migrations and queries."""

from t2c_monitor.store.database import Database, open_database

__all__ = ["Database", "open_database"]
