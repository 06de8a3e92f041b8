"""Keys and text made from what an outsider wrote are stored whatever it holds: plain
Message-IDs stay readable, anything else (NUL, 8-bit, too long) is hashed to a stable key.
PostgreSQL's refusal itself is checked in tests/integration/test_inbound_postgres.py."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.inbound.apply import message_key
from dispatcher.inbound.classify import classify
from dispatcher.inbound.storable import KEY_LENGTH, dedup_key, storable_text
from dispatcher.models import InboundMessage

_HASHED = re.compile(r"mid-sha256:[0-9a-f]{64}")


def test_the_key_length_is_the_columns() -> None:
    assert InboundMessage.__table__.c.key.type.length == KEY_LENGTH


def test_a_plain_message_id_is_kept_as_it_is() -> None:
    assert dedup_key("mid", "<c1.r2.ab12@killertracks.com>") == "mid:<c1.r2.ab12@killertracks.com>"


def test_a_value_that_fills_the_column_exactly_is_kept() -> None:
    value = "x" * (KEY_LENGTH - len("mid:"))
    assert dedup_key("mid", value) == "mid:" + value
    assert _HASHED.fullmatch(dedup_key("mid", value + "x"))


def test_nul_8_bit_and_lone_surrogates_are_hashed_to_a_stable_key_of_their_own() -> None:
    values = ["\x00", "a\x00b", "<a\ufffd@x>", "<caf\u00e9@x>", "\udcff"]
    hashed = [dedup_key("mid", v) for v in values]
    assert all(_HASHED.fullmatch(k) for k in hashed)
    assert len(set(hashed)) == len(values)
    assert hashed == [dedup_key("mid", v) for v in values]  # the same message, the same key


def test_a_message_id_decoding_to_nul_gets_a_hashed_key() -> None:
    raw = b"From: x@example.net\r\nSubject: hi\r\nMessage-ID: =?utf-8?q?=00?=\r\n\r\nhi\r\n"
    report = classify(raw)
    assert report.message_id == "\x00"
    assert _HASHED.fullmatch(message_key(report, raw))


@given(st.text())
def test_every_key_is_printable_ascii_within_the_column(value: str) -> None:
    key = dedup_key("mid", value)
    assert len(key) <= KEY_LENGTH and re.fullmatch(r"[\x20-\x7e]+", key)
    # The plain form starts "mid:", the hashed one "mid-": they never meet.
    assert key == "mid:" + value or _HASHED.fullmatch(key)


def test_storable_text_replaces_nul_and_lone_surrogates_only() -> None:
    assert storable_text("dsn 5.1.1") == "dsn 5.1.1"
    assert storable_text("caf\u00e9") == "caf\u00e9"
    assert storable_text("dsn 5.1.1\x00") == "dsn 5.1.1\ufffd"
    assert storable_text("a\udcffb") == "a?b"
