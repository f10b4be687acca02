"""Tests for the redact stage (ingest.redact)."""

from __future__ import annotations

import base64
import random
import time

import pytest

from ingest.redact import RedactionRules, redact_text

RULES = RedactionRules.default()

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MmaYfPQ2\n"
    "-----END RSA PRIVATE KEY-----"
)
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+ops@example.co.uk now", "mail [REDACTED:email] now"),
        ("call +44 20 7946 0958 today", "call [REDACTED:phone] today"),
        ("call +4915112345678", "call [REDACTED:phone]"),
        ("or (555) 123-4567.", "or [REDACTED:phone]."),
        ("or 555-123-4567", "or [REDACTED:phone]"),
        ("or 1-800-555-1234", "or [REDACTED:phone]"),
        ("visa 4111 1111 1111 1111 ok", "visa [REDACTED:card] ok"),
        ("visa 4111-1111-1111-1111", "visa [REDACTED:card]"),
        ("amex 378282246310005", "amex [REDACTED:card]"),
        ("iban DE89 3704 0044 0532 0130 00.", "iban [REDACTED:iban]."),
        ("iban GB82WEST12345698765432", "iban [REDACTED:iban]"),
        ("k=sk-proj-abc123DEF456ghi789JKL012mno", "k=[REDACTED:api_key]"),
        ("sk-ant-api03-AbCdEf0123456789xyzXYZ_-w", "[REDACTED:api_key]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED:api_key]"),
        ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "[REDACTED:api_key]"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:api_key]"),
        ("github_pat_11ABCDEFG0123456789_abcdefghij", "[REDACTED:api_key]"),
        ("slack xoxb-1234567890-abcdefABCDEF", "slack [REDACTED:api_key]"),
        ("api_key=abcd1234efgh&x=1", "api_key=[REDACTED:api_key]&x=1"),
        ('{"apiKey": "Zx9yW8vU7tS6"}', '{"apiKey": "[REDACTED:api_key]"}'),
        ("X-Api-Key: 9f8e7d6c5b4a3210", "X-Api-Key: [REDACTED:api_key]"),
        ("Authorization: Bearer abcDEF123456ghiJKL789", "Authorization: Bearer [REDACTED:bearer]"),
        (f"key:\n{PEM}\nthanks", "key:\n[REDACTED:private_key]\nthanks"),
        (f"token {JWT} end", "token [REDACTED:jwt] end"),
    ],
)
def test_true_positives(text: str, expected: str) -> None:
    assert redact_text(text, RULES) == (expected, 1)


@pytest.mark.parametrize(
    "text",
    [
        "card? 4111 1111 1111 1112",  # fails Luhn
        "id 4111111111111112",  # fails Luhn
        "IBAN DE89370400440532013001",  # fails mod-97
        "due 2026-11-23 at 2026-11-23T10:20:30.123Z",
        "used 1234 tokens of 128000, cost 0.0042",
        "request 123e4567-e89b-12d3-a456-426614174000",
        "ts 1763856000123456789 and 1763856000123",  # epoch ns/ms, start with 1
        "p=0.4111111111111111",  # a probability, not a card
        "version 1.2.3 on 192.168.1.1, +1 555",
        "The model summarized the key findings: revenue grew by 12% in Q3.",
        "pip install scikit-learn; see sk-learn-style-guide-for-beginners",
        "api_key=os.environ['OPENAI_API_KEY']",
        "a Bearer token authenticates the caller",
        "",
    ],
)
def test_true_negatives(text: str) -> None:
    assert redact_text(text, RULES) == (text, 0)


def test_count_and_mixed_text() -> None:
    text = (
        "a@x.io, b@y.org and c@z.net paid with 5555 5555 5555 4444 "
        "(not 5555 5555 5555 4445), call +1 415 555 0100."
    )
    out, n = redact_text(text, RULES)
    assert n == 5
    assert out == (
        "[REDACTED:email], [REDACTED:email] and [REDACTED:email] paid with [REDACTED:card] "
        "(not 5555 5555 5555 4445), call [REDACTED:phone]."
    )


def test_jwt_after_bearer_is_counted_once() -> None:
    out, n = redact_text(f"Authorization: Bearer {JWT}", RULES)
    assert (out, n) == ("Authorization: Bearer [REDACTED:jwt]", 1)


def test_truncated_private_key_is_redacted_to_the_end() -> None:
    text = "here: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbm"
    assert redact_text(text, RULES) == ("here: [REDACTED:private_key]", 1)


def test_custom_patterns_run_after_builtins() -> None:
    rules = RedactionRules.default({"employee_id": r"EMP-\d{6}"})
    out, n = redact_text("EMP-123456 wrote to a@b.io; EMP-12 is too short", rules)
    assert (out, n) == ("[REDACTED:employee_id] wrote to [REDACTED:email]; EMP-12 is too short", 2)
    assert [label for label, _ in rules.patterns][-1] == "employee_id"


def test_custom_label_replaces_builtin_and_secret_group() -> None:
    rules = RedactionRules.default(
        {"email": r"[a-z]+@corp\.example", "ticket": r"ticket=(?P<secret>\d+)"}
    )
    out, n = redact_text("x@other.io y@corp.example ticket=991", rules)
    assert (out, n) == ("x@other.io [REDACTED:email] ticket=[REDACTED:ticket]", 2)


def test_empty_matching_custom_pattern_changes_nothing() -> None:
    rules = RedactionRules.default({"nothing": r"z*"})
    assert redact_text("plain text", rules) == ("plain text", 0)


@pytest.mark.parametrize(
    ("extra", "label"), [({"bad_one": r"(unclosed"}, "bad_one"), ({"": r"x"}, "''")]
)
def test_invalid_custom_pattern_names_the_label(extra: dict[str, str], label: str) -> None:
    with pytest.raises(ValueError) as info:
        RedactionRules.default(extra)
    assert label in str(info.value)


def test_large_blobs_scan_in_linear_time() -> None:
    # Quadratic regexes take minutes on these; linear ones well under a second.
    rng = random.Random(7)
    blobs = [
        base64.b64encode(rng.randbytes(750_000)).decode(),
        "".join(rng.choice("0123456789 ") for _ in range(1_000_000)),
        "a" * 500_000 + "@",
        "sk-" * 200_000,
        "api_key=" * 50_000,
    ]
    for blob in blobs:
        start = time.perf_counter()
        redact_text(blob, RULES)
        assert time.perf_counter() - start < 5, blob[:20]
