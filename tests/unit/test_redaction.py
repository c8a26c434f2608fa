"""redact_text against every shape of secret and address the security review found leaking.

Each row: the text as it reaches a log line or ``tasks.error``, the exact output,
and the secret that must be gone. One row per shape, so a regression names it.
"""

from __future__ import annotations

import json

import pytest

from listener.redaction import mask_fragments, primary_message, redact_text

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJyb2xlIjoic2VydmljZV9yb2xlIiwiaXNzIjoic3VwYWJhc2UifQ"
    ".Qm9ndXNTaWduYXR1cmVGb3JUZXN0czEyMzQ1Njc4OTA"
)

SHAPES = [
    # (shape, text, expected, secret that must not survive)
    ("env SMTP_PASSWORD", "SMTP_PASSWORD=hunter2 port=587",
     "SMTP_PASSWORD=[redacted] port=587", "hunter2"),
    ("env LLM_API_KEY", "LLM_API_KEY=local-key-123", "LLM_API_KEY=[redacted]", "local-key-123"),
    ("env RAZORPAY_WEBHOOK_SECRET", "RAZORPAY_WEBHOOK_SECRET=rot8-me now",
     "RAZORPAY_WEBHOOK_SECRET=[redacted] now", "rot8-me"),
    ("query access_token", "GET /cb?access_token=ya29.a0Af",
     "GET /cb?access_token=[redacted]", "ya29.a0Af"),
    ("client_secret", "client_secret: cs-998877", "client_secret: [redacted]", "cs-998877"),
    ("libpq pwd", "Server=db;Uid=app;Pwd=s3cr3t!", "Server=db;Uid=app;Pwd=[redacted]", "s3cr3t!"),
    ("dict repr, quoted key", "{'password': 'x9y8z7', 'user': 'app'}",
     "{'password': [redacted], 'user': 'app'}", "x9y8z7"),
    ("JSON, quoted key", '{"api_key": "k-123 456", "model": "m"}',
     '{"api_key": [redacted], "model": "m"}', "k-123 456"),
    ("Authorization Bearer", "Authorization: Bearer abc.def-123",
     "Authorization: Bearer [redacted]", "abc.def-123"),
    ("Authorization Token", "Authorization: Token 0a1b2c3d", "Authorization: Token [redacted]",
     "0a1b2c3d"),
    ("Authorization Digest with spaces",
     'Authorization: Digest username="app", response="6629fae49393a05397450978507c4ef1"',
     "Authorization: Digest [redacted]", "6629fae49393a05397450978507c4ef1"),
    ("Authorization, no scheme", "authorization: plainkey123", "authorization: [redacted]",
     "plainkey123"),
    ("Authorization in a dict repr", "{'Authorization': 'ApiKey q1w2e3', 'Accept': '*/*'}",
     "{'Authorization': 'ApiKey [redacted]', 'Accept': '*/*'}", "q1w2e3"),
    ("x-api-key header", "x-api-key: xk-5566", "x-api-key: [redacted]", "xk-5566"),
    ("api-key header", "api-key: az-7788", "api-key: [redacted]", "az-7788"),
    ("bare OpenAI key", "Incorrect API key provided: sk-proj-AbC123dEf456GhI789.",
     "Incorrect API key provided: [redacted].", "sk-proj-AbC123dEf456GhI789"),
    ("bare JWT (Supabase service key)", f"apikey {JWT} rejected", "apikey [redacted] rejected",
     JWT.split(".")[1]),
    ("bare whsec_", "secret is whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
     "secret is [redacted]", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("bare rzp_live_", "key rzp_live_ILgsfZCZoFIKMb rejected", "key [redacted] rejected",
     "ILgsfZCZoFIKMb"),
    ("non-ASCII address", "bounced: prïya.nàïr@exämple.org", "bounced: [email]", "exämple"),
    ("non-Latin address", "to 用户@例子.中国 failed", "to [email] failed", "用户"),
    ("percent-encoded address", "GET /unsubscribe?to=priya%40example.org HTTP/1.1",
     "GET /unsubscribe?to=[email] HTTP/1.1", "example.org"),
    ("percent-encoded plus address", "u=a.b%2Bx%40mail.example.com",
     "u=[email]", "mail.example.com"),
    ("quoted password with an escaped quote", r"password='ab\'cd ef' host=db",
     "password=[redacted] host=db", "cd ef"),
    ("double-quoted password with an escaped quote", r'"password": "p\"w d" }',
     '"password": [redacted] }', "w d"),
    ("DSN password containing @", "postgresql://app:pa@ssw0rd@db.internal:5432/q",
     "postgresql://app:[redacted]@db.internal:5432/q", "ssw0rd"),
    ("DSN keyword password containing @", "host=db password=p@ss dbname=q",
     "host=db password=[redacted] dbname=q", "p@ss"),
    ("row copied by PostgreSQL", 'DETAIL:  Failing row contains (s-1, a@b.org, "transcript").',
     "DETAIL:  Failing row contains ([redacted]).", "transcript"),
    ("key copied by PostgreSQL", "DETAIL:  Key (email)=(a.b@example.org) already exists.",
     "DETAIL:  Key (email)=([redacted]) already exists.", "a.b@"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected", "secret"),
    [pytest.param(text, expected, secret, id=shape) for shape, text, expected, secret in SHAPES],
)
def test_each_shape_is_masked(text: str, expected: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert redacted == expected


@pytest.mark.parametrize(
    "text",
    [
        "task.completed",
        "ValueError: always fails",
        "cannot connect to postgres at 127.0.0.1:5432: connection refused",
        "check SMTP_USERNAME and SMTP_PASSWORD",
        "max_tokens=1024",
        "postgresql://db:5432/q",
        "7f3c2b1e-5a4d-4c3b-9e8f-0a1b2c3d4e5f",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_a_json_document_with_secrets_stays_free_of_them() -> None:
    document = json.dumps({"headers": {"Authorization": "Bearer t0k3n"}, "password": "pw-1"})
    redacted = redact_text(document)
    assert "t0k3n" not in redacted
    assert "pw-1" not in redacted


def test_a_database_error_keeps_only_its_primary_message() -> None:
    class Diagnostic:
        message_primary = 'new row for relation "care_plans" violates check constraint "c"'

    class CheckViolation(Exception):
        diag = Diagnostic()

    exc = CheckViolation(
        'new row for relation "care_plans" violates check constraint "c"\n'
        "DETAIL:  Failing row contains (s-1, the whole transcript)."
    )
    assert primary_message(exc) == Diagnostic.message_primary


def test_a_plain_exception_keeps_its_whole_message() -> None:
    assert primary_message(ValueError("line one\nline two")) == "line one\nline two"


def test_mask_fragments_hides_an_echoed_part_of_a_secret() -> None:
    message = 'invalid percent-encoded token: "s%zz"'
    assert mask_fragments(message, "s%zz@x") == 'invalid percent-encoded token: "[redacted]"'
    assert mask_fragments('invalid option "bogus"', "s%zz") == 'invalid option "bogus"'
