"""Where a monitor's alerts go: the channel definitions of a monitor file (``channels:``). No secret is ever
written in one: webhook URLs live in the environment or a Prefect Secret block, passwords in blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="set from the key in `channels:`")


class WebhookChannel(_Channel):
    """JSON POSTed to a URL. The URL is a secret: held in an env var or a Prefect Secret block."""

    type: Literal["webhook"]
    url_env: str | None = Field(None, description="environment variable holding the URL")
    url_secret: str | None = Field(None, description="name of a Prefect Secret block holding the URL")
    timeout_s: float = Field(10.0, gt=0, le=300, description="seconds to wait for the receiver's answer")

    @model_validator(mode="before")
    @classmethod
    def _no_plain_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" in data:
            raise ValueError("a webhook URL is a secret and is never written in the config or the database: put "
                             "it in an environment variable (url_env: NAME) or a Prefect Secret block (url_secret: "
                             "BLOCK)")
        return data

    @model_validator(mode="after")
    def _one_source(self) -> WebhookChannel:
        if (self.url_env is None) == (self.url_secret is None):
            raise ValueError("a webhook channel needs exactly one of url_env or url_secret")
        return self


class BlockChannel(_Channel):
    """A saved Prefect notification block: Slack, Microsoft Teams, custom webhook, PagerDuty, ..."""

    type: Literal["prefect_block"]
    block: str = Field(pattern=r"^[a-z0-9-]+/[A-Za-z0-9_-]+$", description="block slug, e.g. slack-webhook/ml-alerts")


class EmailChannel(_Channel):
    """E-mail through prefect-email: an ``EmailServerCredentials`` block and recipients."""

    type: Literal["email"]
    credentials: str = Field(description="name of an EmailServerCredentials block")
    to: list[str] = Field(min_length=1, description="recipients")
    email_from: str | None = Field(None, description="sender address (default: the credentials' user)")


class FileChannel(_Channel):
    """Each alert appended as one JSON line to a local file (for demos, audits on disk, log shippers)."""

    type: Literal["file"]
    path: Path = Field(description="the JSON-lines file (relative: to the monitors file)")


Channel = Annotated[WebhookChannel | BlockChannel | EmailChannel | FileChannel, Field(discriminator="type")]
