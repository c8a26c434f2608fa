"""Masking of e-mail addresses and secrets in text bound for logs or the error column."""

from __future__ import annotations

import re

REDACTED = "[redacted]"
# Field names whose values are never logged, whatever they hold.
SECRET_KEYS = re.compile(
    r"payload|passw(or)?d|secret|token|api_?key|authorization|cookie|credential|private_?key",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.IGNORECASE)
_KEY_VALUE_SECRET = re.compile(
    r"(?P<key>\b(?:passw(?:or)?d|secret|token|api_?key)\s*[=:]\s*)(?P<value>'[^']*'|\"[^\"]*\"|\S+)",
    re.IGNORECASE,
)
_SECRET_WORDS = ("passw", "secret", "token", "api")
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def redact_text(text: str) -> str:
    """Mask e-mail addresses, URL passwords, ``password=...`` pairs and bearer tokens."""
    # Cheap substring checks first: most values (ids, types, event names) skip every regex.
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\g<scheme>:" + REDACTED + "@", text)
        text = _EMAIL.sub("[email]", text)
    lowered = text.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        text = _KEY_VALUE_SECRET.sub(r"\g<key>" + REDACTED, text)
    if "bearer" in lowered or "basic" in lowered:
        text = _BEARER.sub(r"\1 " + REDACTED, text)
    return text
