"""Masking of e-mail addresses and secrets in text bound for logs or the error column.

``redact_text`` runs on every string of every log line, so each family of patterns
sits behind a cheap substring test: a line with no ``@``, no secret-like word and
no provider-key prefix (most of them: ids, types, event names) meets no regex.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
# Field names whose values are never logged, whatever they hold. ``token`` but not
# ``tokens`` (``max_tokens`` is a count).
SECRET_KEYS = re.compile(
    r"payload|passw(or)?d|pwd|passphrase|secret|token(?!s)|api[_-]?key|authorization|cookie"
    r"|credential|private[_-]?key",
    re.IGNORECASE,
)

# A quoted value, with backslash escapes (so an escaped quote does not end it), or
# an unquoted run up to whitespace.
_VALUE = re.compile(r"\"(?:[^\"\\]|\\.)*\"?|'(?:[^'\\]|\\.)*'?|\S+")
# ``SMTP_PASSWORD=...``, ``access_token: ...``, ``{'password': ...}``, ``"api_key": ...``:
# a key (quoted or not) and its separator; the key is a secret's when it holds a
# secret word anywhere (``_`` is a word character, so ``\b`` would miss SMTP_PASSWORD).
# Keys start at a token boundary and are matched possessively: one pass, no backtracking.
_KEY = re.compile(r"(?<![\w.-])([\"']?)([\w.-]++)\1\s*[=:]\s*")
_SECRET_NAME = re.compile(
    r"passw(?:or)?d|pwd|passphrase|secret|token(?!s)|api[_-]?key|credential|private[_-]?key",
    re.IGNORECASE,
)
# Header-shaped secrets whose values hold spaces (``Authorization: Digest a="b", ...``):
# the value runs to its closing quote when quoted, else to the end of the line. A
# known scheme name stays readable.
_HEADER_SECRET = re.compile(
    r"(?P<key>(?<![A-Za-z0-9])(?:proxy-)?(?:authorization|cookie|set-cookie|x-api-key|api-key)"
    r"[\"']?\s*[=:]\s*(?:(?P<sq>')|(?P<dq>\"))?"
    r"(?:(?:Bearer|Basic|Digest|Token|Negotiate|NTLM|ApiKey|AWS4-HMAC-SHA256|DPoP)\s+)?)"
    r"(?P<value>(?(sq)(?:[^'\\\r\n]|\\.)*|(?(dq)(?:[^\"\\\r\n]|\\.)*|[^\r\n]*)))",
    re.IGNORECASE,
)
_SCHEME_TOKEN = re.compile(r"\b(Bearer|Basic|Token|Digest)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# Keys and tokens that are secret by their shape, wherever they appear: OpenAI-style
# ``sk-...``, JWTs (a Supabase service key is one), Razorpay's ``whsec_`` and
# ``rzp_live_``/``rzp_test_``, Supabase's ``sb_secret_``.
_BARE_TOKEN = re.compile(
    r"(?<![\w-])(?:sk-[A-Za-z0-9_-]{8,}|eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}"
    r"|whsec_[A-Za-z0-9+/=_-]+|rzp_(?:live|test)_[A-Za-z0-9]+|sb_secret_[A-Za-z0-9_-]+)"
)

# A URL's password may itself hold ``@``: the userinfo ends at the last ``@`` of the
# token (greedy ``\S*``).
_URL_PASSWORD = re.compile(
    r"(?P<scheme>(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*+://[^:/@\s]*+):\S*@", re.IGNORECASE
)
# \w is Unicode-aware: ``prïya@exämple.org`` and ``用户@例子.中国`` are addresses too.
_EMAIL = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]++@[\w-]+(?:\.[\w-]+)+")
# Percent-encoded (``priya%40example.org``, in URLs and query strings): there the
# local part cannot hold a bare ``/ = ? &``.
_EMAIL_ENCODED = re.compile(r"(?<![\w.!#$%*+~'-])[\w.!#$%*+~'-]+?%40[\w%-]+(?:\.[\w%-]+)+")

# PostgreSQL's error details copy row values (``Failing row contains (...)``,
# ``Key (email)=(a@b.c) already exists``): the values go, the sentence stays.
_ROW_VALUES = re.compile(r"(Failing row contains |Key \([^)\n]*\)=)\(.*\)")


def redact_text(text: str) -> str:
    """Mask e-mail addresses, passwords, keys, tokens and row values in ``text``."""
    lowered = text.lower()
    if " " in text and (
        "bearer" in lowered or "basic" in lowered or "token" in lowered or "digest" in lowered
    ):
        text = _SCHEME_TOKEN.sub(r"\1 " + REDACTED, text)
    if ("=" in text or ":" in text) and (
        "pass" in lowered
        or "pwd" in lowered
        or "secret" in lowered
        or "token" in lowered
        or "key" in lowered
        or "auth" in lowered
        or "cookie" in lowered
        or "credential" in lowered
    ):
        text = _HEADER_SECRET.sub(r"\g<key>" + REDACTED, text)
        text = _mask_secret_values(text)
    if (
        "eyJ" in text
        or "sk-" in text
        or ("_" in text and ("whsec_" in text or "rzp_" in text or "sb_secret_" in text))
    ):
        text = _BARE_TOKEN.sub(REDACTED, text)
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\g<scheme>:" + REDACTED + "@", text)
        text = _EMAIL.sub("[email]", text)
    if "%40" in text:
        text = _EMAIL_ENCODED.sub("[email]", text)
    if "(" in text and ("ailing row" in text or "Key (" in text):
        text = _ROW_VALUES.sub(r"\1(" + REDACTED + ")", text)
    return text


def _mask_secret_values(text: str) -> str:
    """Replace the value after every key that names a secret (see ``_KEY``)."""
    parts: list[str] = []
    done = pos = 0
    while (key := _KEY.search(text, pos)) is not None:
        pos = key.end()
        if not _SECRET_NAME.search(key[2]):
            continue  # the value may itself hold a key: scan on from here
        value = _VALUE.match(text, pos)
        if value is None:
            continue
        parts += [text[done:pos], REDACTED]
        done = pos = value.end()
    return "".join([*parts, text[done:]]) if parts else text


def primary_message(exc: BaseException) -> str:
    """The one-line message of ``exc``; for a database error, its primary message only.

    psycopg's text of a server error adds ``DETAIL``, ``HINT`` and ``CONTEXT`` lines, and
    a DETAIL may copy a whole row (a transcript, an address) into ``tasks.error``.
    """
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if isinstance(primary, str) and primary.strip():
        return primary.strip()
    text = str(exc).strip()
    if type(exc).__module__.split(".", 1)[0] == "psycopg" and text:
        return text.splitlines()[0].strip()
    return text


def mask_fragments(text: str, secret: str) -> str:
    """Replace every quoted fragment of ``text`` that shares characters with ``secret``.

    For messages that echo part of a secret they could not parse (libpq quoting a
    malformed DSN's ``"p%zz"`` password back): the fragment goes, the message stays.
    """
    if not secret:
        return text

    def mask(match: re.Match[str]) -> str:
        fragment = match.group(1)
        shared = fragment and (fragment in secret or secret in fragment)
        return f'"{REDACTED}"' if shared else match.group(0)

    return re.sub(r'"([^"]*)"', mask, text)
