"""The exception family of t2c-monitor.

Every error a user can cause is a ``T2CError`` whose message names the offending value and says
how to fix it. Bad arguments to library functions raise ``ValueError`` naming the argument.
"""

from __future__ import annotations


class T2CError(Exception):
    """Base of every error t2c-monitor raises on purpose."""


class ConfigError(T2CError):
    """A setting, monitor file or spec is invalid."""


class NothingToAudit(T2CError):
    """The monitor's own audit window holds nothing to test: no batch since the baseline's, or (for a
    scheduled audit) exactly the batches the last audit tested. Not a failure: nothing is stored."""


class DatabaseUnavailableError(T2CError):
    """The configured PostgreSQL server cannot be reached."""


class ExtensionMissingError(T2CError):
    """The PostgreSQL server has no pgvector extension available."""


class NotFittedError(T2CError):
    """An object that must be fitted (an aligner, a baseline) is used before fitting."""


class SpaceMismatchError(T2CError):
    """Two objects live in different embedding spaces (other encoder, CLIP model or dimension)."""


class ModelLoadError(T2CError):
    """A model name, hub tag or weights file cannot be resolved or loaded."""


class ImageDecodeError(T2CError):
    """An image file cannot be decoded; the reason is recorded and the batch goes on."""


class PrefectUnavailableError(T2CError):
    """The Prefect API (configured, or the local server of the embedded default) cannot be reached or started."""
