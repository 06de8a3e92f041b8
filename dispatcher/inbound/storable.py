"""Turning what an outsider wrote into keys and text every backend stores.

Anyone can mail bounces@ and unsubscribe@, so a header may decode to anything: a NUL
(``=?utf-8?q?=00?=``), a lone surrogate, a thousand characters. PostgreSQL refuses NUL in
text and the driver cannot encode a lone surrogate; either error would fail the message's
transaction every time it is read, and a mailbox read in order would never get past it.
"""

from __future__ import annotations

import hashlib
import re

# inbound_messages.key is String(300) (tests check that the two agree).
KEY_LENGTH = 300

_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")


def dedup_key(kind: str, value: str) -> str:
    """``kind:value`` when ``value`` is printable ASCII and the key fits its column, else
    ``kind-sha256:<hex digest of value>``.

    Plain values (every Message-ID and event id seen in practice) stay readable in the
    table; anything else still gets a stable key of its own, so a replay stays a duplicate.
    The two forms cannot collide: after ``kind`` one has ``:``, the other ``-``.
    """
    plain = f"{kind}:{value}"
    if len(plain) <= KEY_LENGTH and _PRINTABLE_ASCII.fullmatch(value):
        return plain
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{kind}-sha256:{digest}"


def storable_text(text: str) -> str:
    """``text`` with NUL and undecodable characters (lone surrogates) replaced, so
    PostgreSQL stores it whatever the message held."""
    if text.isascii() and "\x00" not in text:
        return text  # the common case, unchanged and cheap
    clean = text.encode("utf-8", "replace").decode("utf-8")
    return clean.replace("\x00", "\ufffd")
