"""Credentials out of text: every form a URL or a libpq DSN can hold one in.

A URL carries a secret in its user info (``postgresql://u:SECRET@h/db``) and in its query string
(``?password=SECRET``, ``&sslpassword=``, ``?token=``, ``X-Amz-Signature=``); a libpq DSN carries it
as ``password=SECRET`` among other ``key=value`` pairs. ``mask_url`` masks one URL; ``redact`` masks
every URL and DSN pair found in a message, a log line or a stored error.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"
_CREDENTIAL_KEY = re.compile(r"pass|secret|token|key|auth|credential|signature|sig$|session|cookie", re.IGNORECASE)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>`]+", re.IGNORECASE)
_DSN_PAIR = re.compile(r"\b([a-z_]*(?:pass|secret|token|key|auth)[a-z_]*)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&,;'\"]+)",
                       re.IGNORECASE)


def is_credential_key(key: str) -> bool:
    """Whether a query or DSN parameter named ``key`` holds a secret (password, sslpassword, token, ...)."""
    return bool(_CREDENTIAL_KEY.search(key))


def mask_url(url: str) -> str:
    """``url`` with the password of its user info and every credential-like query value replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':' + MASK if sep else ''}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{quote(k, safe='')}={MASK if is_credential_key(k) else quote(v, safe='/:,')}"
                         for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def carries_credentials(uri: str) -> bool:
    """Whether ``uri`` holds a password in its user info or a credential-like query parameter with a value."""
    if "://" not in uri:
        return False
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if ":" in parts.netloc.rpartition("@")[0]:
        return True
    return any(v and is_credential_key(k) for k, v in parse_qsl(parts.query, keep_blank_values=True))


def without_urls(text: str) -> str:
    """``text`` with every URL replaced by ``<url>``: for messages about a webhook, whose path is its token."""
    return _URL.sub("<url>", text)


def redact(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` with every URL masked (``mask_url``), every DSN ``password=...`` masked, and each of ``secrets``
    (values known to be secret, such as a webhook URL from the environment) replaced by ``<secret>``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "<secret>")
    text = _URL.sub(lambda m: mask_url(m.group(0)), text)
    return _DSN_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials (``redact``) in each record's message and traceback, for
    every handler a log line can leave by: the terminal, a log file, Prefect's API and so its database."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def add_redacting_filter(handler: logging.Handler) -> None:
    """Attach one ``RedactingFilter`` to ``handler`` (idempotent)."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
