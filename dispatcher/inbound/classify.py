"""What a message that came back is: a bounce, a complaint, an unsubscribe, or none of these.

RFC 3464 delivery-status and RFC 5965 feedback reports are read with the standard ``email``
package; the many non-standard bounces MTAs still send go to flufl.bounce (GNU Mailman's
detectors). Classification changes nothing and knows nothing of our database: whether a
report is ours, and what it may change, is decided in :mod:`dispatcher.inbound.apply`.

Input is bounded: only the first ``PARSE_LIMIT`` bytes are parsed, a header section larger
than ``HEADER_LIMIT`` is not parsed at all, and attachments are never decoded (so a zip bomb
stays a few kilobytes of base64).
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from typing import Any

log = logging.getLogger(__name__)

PARSE_LIMIT = 1024 * 1024
HEADER_LIMIT = 128 * 1024
MAX_PARTS = 200


class Kind(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    AUTO_REPLY = "auto_reply"
    NOT_FEEDBACK = "not_feedback"
    UNPARSED = "unparsed"


@dataclass(frozen=True)
class Report:
    """What a message says, as far as it can be read."""

    kind: Kind
    recipients: tuple[str, ...] = ()  # the addresses the report is about
    why: str = ""  # how it was recognised (e.g. "dsn 5.1.1", "arf abuse", "flufl")
    message_id: str | None = None  # the report's own Message-ID
    subject: str = ""
    sender: str | None = None  # the From address
    to: tuple[str, ...] = ()  # To, Delivered-To and X-Original-To
    size: int = 0
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "recipients": list(self.recipients),
            "why": self.why,
            "message_id": self.message_id,
            "size": self.size,
            "truncated": self.truncated,
        }


_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|auto:|out of (the )?office|"
    r"abwesenheit|vacation|away from (the )?office|r[ée]ponse automatique|i am away)",
    re.IGNORECASE,
)
_UNSUBSCRIBE_WORDS = re.compile(
    r"\b(unsubscribe|remove me|opt[ -]?out|take me off|stop (sending|e-?mailing))\b",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliver|could not be delivered|delivery (status notification \(failure|failed)|"
    r"returned mail|mail delivery failed|failure notice|delivery failure)",
    re.IGNORECASE,
)
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "ndr", "inetgw", "mailerdaemon")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def classify(raw: bytes, *, unsubscribe_local: str = "unsubscribe") -> Report:
    """Classify one raw message (never raises; unreadable input is ``unparsed``)."""
    size = len(raw)
    truncated = size > PARSE_LIMIT
    data = raw[:PARSE_LIMIT]
    end = _HEADER_END.search(data, 0, HEADER_LIMIT + 4)
    if end is None and len(data) > HEADER_LIMIT:
        return Report(Kind.UNPARSED, why="header section too large", size=size, truncated=True)
    try:
        msg = message_from_bytes(data)
    except Exception as exc:  # the parser is lenient; anything it raises is our "unparsed"
        return Report(Kind.UNPARSED, why=f"parse error: {type(exc).__name__}", size=size)
    if not msg.keys():
        return Report(Kind.UNPARSED, why="no headers", size=size, truncated=truncated)
    base: dict[str, Any] = {
        "message_id": _header(msg, "Message-ID") or None,
        "subject": _header(msg, "Subject"),
        "sender": _address(_header(msg, "From")),
        "to": tuple(
            a.lower()
            for _, a in getaddresses(
                [_header(msg, h) for h in ("To", "Delivered-To", "X-Original-To")]
            )
            if "@" in a
        ),
        "size": size,
        "truncated": truncated,
    }
    try:
        kind, recipients, why = _classify(msg, base, unsubscribe_local)
    except Exception as exc:  # a malformed part must not stop the mailbox; record it
        log.warning("classification failed: %s", type(exc).__name__)
        kind, recipients, why = Kind.UNPARSED, [], f"error: {type(exc).__name__}"
    return Report(kind, tuple(recipients), why, **base)


def _classify(
    msg: Message, base: dict[str, Any], unsubscribe_local: str
) -> tuple[Kind, list[str], str]:
    parts = _parts(msg)
    for part in parts:
        if part.get_content_type() == "message/feedback-report":
            return _feedback(part, parts)
    for part in parts:
        if part.get_content_type() == "message/delivery-status":
            found = _delivery_status(part)
            if found is not None:
                return found
    found = _flufl(msg)
    if found is not None:
        return found
    if _from_mailer_daemon(base["sender"]) and _BOUNCE_SUBJECT.search(base["subject"]):
        # A bounce whose failed address no detector can read: only its VERP return path
        # (or our Message-ID inside) can say whom it is about.
        return Kind.HARD_BOUNCE, [], "bounce subject"
    if _auto_reply(msg, base["subject"]):
        return Kind.AUTO_REPLY, [], "auto-reply"
    if _to_unsubscribe(base["to"], unsubscribe_local) or _UNSUBSCRIBE_WORDS.search(base["subject"]):
        return Kind.UNSUBSCRIBE, [base["sender"]] if base["sender"] else [], "unsubscribe"
    return Kind.NOT_FEEDBACK, [], ""


def _parts(msg: Message) -> list[Message]:
    parts: list[Message] = []
    for part in msg.walk():
        parts.append(part)
        if len(parts) >= MAX_PARTS:
            break
    return parts


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    try:
        text = str(make_header(decode_header(str(value))))
    except Exception:  # unknown charset, bad encoded word: keep the raw text
        text = str(value)
    return " ".join(text.split())[:998]


def _address(value: str) -> str | None:
    address = parseaddr(value)[1].strip().lower()
    return address if "@" in address else None


def _field_address(value: str | None) -> str | None:
    """``rfc822; user@example.com`` → ``user@example.com``."""
    if not value:
        return None
    text = str(value).split(";", 1)[-1].strip().strip("<>").strip()
    return text.lower() if "@" in text else None


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):  # a part the parser left as text: parse its field blocks
        return [HeaderParser().parsestr(b) for b in re.split(r"\r?\n\s*\r?\n", payload)]
    return []


def _delivery_status(part: Message) -> tuple[Kind, list[str], str] | None:
    hard: list[tuple[str, str]] = []
    soft: list[tuple[str, str]] = []
    delivered = False
    for block in _blocks(part):
        # The address we sent to, when the MTA says it (Final-Recipient may be a rewrite).
        recipient = _field_address(block.get("Original-Recipient")) or _field_address(
            block.get("Final-Recipient")
        )
        if recipient is None:
            continue
        action = str(block.get("Action", "")).strip().lower()
        status = str(block.get("Status", "")).strip().split(" ")[0]
        if action.startswith(("delivered", "relayed", "expanded")):
            delivered = True
            continue
        # "failed" is final even with a 4.x.x status (retries expired); a full mailbox
        # (x.2.2) may empty, so it counts towards the soft-bounce limit instead.
        if status.endswith(".2.2") or action.startswith("delayed"):
            soft.append((recipient, status))
        elif action.startswith(("failed", "error")) or status.startswith("5"):
            hard.append((recipient, status))
        elif status.startswith("4"):
            soft.append((recipient, status))
    if hard:
        return Kind.HARD_BOUNCE, _unique(r for r, _ in hard), f"dsn {hard[0][1]}".strip()
    if soft:
        return Kind.SOFT_BOUNCE, _unique(r for r, _ in soft), f"dsn {soft[0][1]}".strip()
    if delivered:  # a success notification
        return Kind.NOT_FEEDBACK, [], "dsn delivered"
    return None


def _feedback(part: Message, parts: list[Message]) -> tuple[Kind, list[str], str]:
    blocks = _blocks(part)
    fields = blocks[0] if blocks else Message()
    feedback_type = str(fields.get("Feedback-Type", "abuse")).strip().lower() or "abuse"
    if feedback_type == "not-spam":
        return Kind.NOT_FEEDBACK, [], "arf not-spam"
    recipients = [a for a in [_field_address(fields.get("Original-Rcpt-To"))] if a]
    if not recipients:
        original = _original_headers(parts)
        if original is not None:
            recipients = [
                a.lower() for _, a in getaddresses([str(original.get("To", ""))]) if "@" in a
            ]
    return Kind.COMPLAINT, _unique(recipients), f"arf {feedback_type}"


def _original_headers(parts: list[Message]) -> Message | None:
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            text = part.get_payload(decode=False)
            if isinstance(text, str):
                return HeaderParser().parsestr(text[:HEADER_LIMIT])
    return None


def _auto_reply(msg: Message, subject: str) -> bool:
    """RFC 3834 ``Auto-Submitted`` (other than ``no``), the common vendor markers, or an
    out-of-office subject. Bounces are recognised before this, so a bounce's own
    ``Auto-Submitted`` does not hide it."""
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond"):
        return True
    if str(msg.get("Precedence", "")).strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(subject))


def _flufl(msg: Message) -> tuple[Kind, list[str], str] | None:
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on odd input is no bounce found
        return None
    if permanent:
        return Kind.HARD_BOUNCE, _decoded(permanent), "flufl"
    if temporary:
        return Kind.SOFT_BOUNCE, _decoded(temporary), "flufl"
    return None


def _decoded(addresses: Any) -> list[str]:
    out = []
    for a in addresses:
        text = a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a)
        out.append(text.strip().lower())
    return sorted(set(out))


def _from_mailer_daemon(sender: str | None) -> bool:
    local = (sender or "").partition("@")[0]
    return local == "" or local.startswith(_DAEMONS)


def _to_unsubscribe(to: tuple[str, ...], local: str) -> bool:
    for address in to:
        name = address.partition("@")[0]
        if name == local or name.startswith(local + "+"):
            return True
    return False


def _unique(items: Any) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
