"""Settings in one place.

Every path, URL and threshold of the service comes from here (environment variables with the
prefix ``T2C_``, or a ``.env`` file) or from a monitor config. The environment is read elsewhere
only for what belongs to other tools or to the user's secrets: Prefect's own variables (which
``prefect_server``, ``flows`` and ``configure_logging`` set for Prefect), the Hugging Face offline
flags, ``XDG_RUNTIME_DIR`` (set for pgserver's lock when missing), and the variables that alert
channels name for their webhook URLs (``url_env``), read when sending.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="T2C_", env_file=".env", extra="ignore")

    home: Path = Field(
        default=Path(".t2c"),
        description="Directory for local state: embedded database, trained world, reports, caches.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of an external PostgreSQL with pgvector. "
        "Unset: an embedded PostgreSQL (pgserver) under <home>/pgdata is started and reused.",
    )
    device: str = Field(
        default="auto",
        description="Torch device for encoders: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1'.",
    )
    models: Path | None = Field(
        default=None,
        description="Directory of trained models (the shapes world's cache); default <home>/models. Share it "
        "between homes to build the world once.",
    )
    connect_timeout_s: int = Field(
        default=5, ge=1, description="Seconds before an unreachable database or Prefect API fails."
    )
    prefect_startup_timeout_s: int = Field(
        default=120, ge=5, description="Seconds the local Prefect server may take to start (its first start migrates "
        "its database)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of the logs of the Prefect flow runs t2c starts, ingest and audit "
        "progress among them (unless PREFECT_LOGGING_LEVEL says otherwise), and of the `t2c_monitor` logger; "
        "the local Prefect server logs warnings only, unless this is DEBUG."
    )
    max_image_pixels: int = Field(
        default=64_000_000, ge=1, description="Images with more pixels are refused (decompression-bomb guard)."
    )
    max_image_bytes: int = Field(default=64 * 1024**2, ge=1, description="Image files larger than this are refused.")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def pgdata(self) -> Path:
        """Data directory of the embedded PostgreSQL."""
        return self.home / "pgdata"

    @property
    def models_dir(self) -> Path:
        return self.models.expanduser().resolve() if self.models else self.home / "models"

    @property
    def prefect_dir(self) -> Path:
        """State of the local Prefect server (its database, log and record) and of Prefect's clients."""
        return self.home / "prefect"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def configure_logging(settings: Settings | None = None) -> None:
    """Apply ``log_level`` to the ``t2c_monitor`` logger (to stderr) and, when it was set and
    ``PREFECT_LOGGING_LEVEL`` was not, to Prefect's (read when Prefect is first imported)."""
    import logging
    import os

    from t2c_monitor.redaction import add_redacting_filter

    settings = settings or get_settings()
    logger = logging.getLogger("t2c_monitor")
    logger.setLevel(settings.log_level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    for handler in logger.handlers:
        add_redacting_filter(handler)
    if "log_level" in settings.model_fields_set:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", settings.log_level)


def reset_settings_cache() -> None:
    """Forget the cached settings so the next ``get_settings()`` re-reads the environment."""
    get_settings.cache_clear()
