"""What ingest refuses before it reads or stores anything: a batch id it cannot store or print safely, and
a source whose URI carries a credential (it would be stored with the batch and kept as a flow run's
parameter)."""

from __future__ import annotations

import unicodedata

from t2c_monitor.errors import ConfigError
from t2c_monitor.redaction import carries_credentials, mask_url

MAX_BATCH_ID = 200  # batch.external_id's width


def check_batch_id(batch_id: str | None) -> str | None:
    """A given batch id as stored (``ConfigError`` naming the problem when it cannot be), or None."""
    if batch_id is None:
        return None
    if not batch_id.strip():
        raise ConfigError("The batch id is empty: give a name such as day-1, or none to derive one from the content.")
    if "\x00" in batch_id:
        raise ConfigError(f"The batch id {batch_id[:40]!r} holds a NUL byte, which PostgreSQL cannot store: remove it.")
    control = next((ch for ch in batch_id if unicodedata.category(ch) == "Cc"), None)
    if control is not None:  # a newline or an escape code in an id could forge a line of output or drive a terminal
        raise ConfigError(f"The batch id {batch_id[:40]!r} holds the control character {control!r}: "
                          "use letters, digits and punctuation.")
    if len(batch_id) > MAX_BATCH_ID:
        raise ConfigError(f"The batch id {batch_id[:40]!r}... has {len(batch_id)} characters; at most {MAX_BATCH_ID} "
                          "characters are kept: give a shorter one.")
    return batch_id


def check_source(source: str) -> str:
    """``source`` if it carries no credential (``ConfigError`` otherwise: it would be stored as the batch's
    source and as a flow run's parameter)."""
    if carries_credentials(source):
        raise ConfigError(f"The source {mask_url(source)} carries a credential, which would be stored with the batch "
                          "and in the run's parameters: give it to the filesystem through its environment "
                          "(e.g. AWS_SECRET_ACCESS_KEY) or its fsspec configuration instead.")
    return source
