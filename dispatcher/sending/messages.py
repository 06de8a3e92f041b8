"""Building the MIME message: headers that cannot be injected, both parts, RFC 8058.

This runs once per recipient, so it avoids the slow parts of the stdlib generator while
keeping its rules where they are subtle. Every header goes through the stdlib's compat32
folding (RFC 2047 encoded words, lines folded under 78 octets) except a short ASCII one,
which that folding would leave as it is anyway. The body has one fixed shape —
multipart/alternative, text/plain then text/html, UTF-8, quoted-printable — so it is written
directly: :mod:`dispatcher.sending.quoted_printable` encodes each part with lines of at most
76 octets (a campaign's fast render brings its parts encoded, all but the lines holding a
recipient's value done once per campaign), and the boundary starts with ``=_``, which
quoted-printable text can never contain, so it needs no search through the bodies. Tests
parse the result back with the stdlib parser.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from email.header import Header
from email.policy import Compat32
from email.utils import format_datetime, formataddr, parseaddr, quote
from functools import lru_cache

from dispatcher.sending.quoted_printable import encode
from dispatcher.sending.rendering import RenderedMessage

# A display name longer than this is left out of the To header (it is only cosmetic, and a
# long unbreakable name could push the header line past the 998 octets SMTP allows).
MAX_DISPLAY_NAME = 200
_FOLD_AT = 78
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CRLF = "\r\n"
# SMTP wants CRLF line ends; smtplib does not convert them in a bytes message.
_POLICY = Compat32(linesep=_CRLF)
_PART_HEAD = (
    '\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_PLAIN_HEAD = _PART_HEAD.format(subtype="plain").encode("ascii")
_HTML_HEAD = _PART_HEAD.format(subtype="html").encode("ascii")


class HeaderInjection(ValueError):
    """Data meant for a header cannot go there as it is: a line break, NUL or other control
    character (or a non-ASCII URL). The message names the header; nothing is stripped and
    the message is not built."""


def _clean(header: str, value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        ch = found.group()
        what = "a line break" if ch in "\r\n" else f"a control character (U+{ord(ch):04X})"
        raise HeaderInjection(f"the {header} header would contain {what}; not sent")
    return value


def message_id_for(
    campaign_id: int, nonce: str, contact_id: int, sender_domain: str, tag: str
) -> str:
    """Stable per (campaign, contact): a resend of the same message has the same id. The
    campaign's random ``nonce`` keeps it unique across database resets and installations
    (receivers drop a Message-ID they have seen as a duplicate); ``tag`` lets a bounce that
    quotes it be traced (``dispatcher.inbound.returnpath``)."""
    return f"<c{campaign_id}.{nonce}.r{contact_id}.{tag}@{sender_domain}>"


def list_id_for(company_name: str, sender_domain: str, purpose: str) -> str:
    """RFC 2919 ``List-Id``: one list per purpose and sending domain, so mail clients can
    file and filter it (``Killer Tracks marketing <marketing.killertracks.com>``)."""
    label = re.sub(r"[^a-z0-9-]+", "-", purpose.lower()).strip("-") or "mail"
    phrase = re.sub(r"[^A-Za-z0-9 &'-]", "", f"{company_name} {purpose.replace('_', ' ')}")
    phrase = " ".join(phrase.split())
    return f"{phrase} <{label}.{sender_domain}>" if phrase else f"<{label}.{sender_domain}>"


def feedback_id_for(campaign_id: int, purpose: str, sender_domain: str) -> str:
    """Gmail's feedback-loop header, ``CampaignId:MailType:SenderId``: complaints are
    reported per campaign and purpose; the sender id (the domain's first label) is
    constant for all our mail."""
    sender_id = re.sub(r"[^a-z0-9]", "", sender_domain.split(".")[0].lower()) or "dispatcher"
    return f"c{campaign_id}:{purpose}:{sender_id}"


def _header(name: str, value: str | Header) -> bytes:
    if isinstance(value, Header):  # made with header_name, so its first line leaves room
        return f"{name}: {value.encode(linesep=_CRLF)}{_CRLF}".encode("ascii")
    if value.isascii() and len(name) + len(value) + 2 <= _FOLD_AT:
        return f"{name}: {value}{_CRLF}".encode("ascii")
    return _POLICY.fold_binary(name, value)


def _list_unsubscribe(url: str, mailto: str | None) -> bytes:
    """RFC 2369 header; when long, folded between the targets, never inside a URL."""
    targets = [f"<{_clean('List-Unsubscribe', url)}>"]
    if mailto:
        if "?" not in mailto:
            mailto += "?subject=unsubscribe"
        targets.append(f"<mailto:{_clean('List-Unsubscribe', mailto)}>")
    value = ", ".join(targets)
    if not value.isascii():
        raise HeaderInjection("the List-Unsubscribe header needs ASCII URLs; not sent")
    if len(value) + 18 > _FOLD_AT:
        value = f",{_CRLF} ".join(targets)
    return f"List-Unsubscribe: {value}{_CRLF}".encode("ascii")


def _mailbox(header: str, name: str | None, address: str) -> str | Header:
    """``Name <address>``: RFC 2047 words for a non-ASCII name, RFC 6532 for an address."""
    address = _clean(header, address)
    name = _clean(header, name or "").strip()
    if len(name) > MAX_DISPLAY_NAME:
        name = ""
    if not address.isascii():
        # An internationalised address travels as raw UTF-8 (RFC 6532); compat32 writes
        # surrogate-escaped text as the bytes it stands for.
        raw = f'"{quote(name)}" <{address}>' if name else address
        return raw.encode("utf-8").decode("ascii", "surrogateescape")
    if not name:
        return address
    if name.isascii():
        return formataddr((name, address))
    mailbox = Header(name, "utf-8", header_name=header)
    mailbox.append(f"<{address}>", "us-ascii")
    return mailbox


@lru_cache(maxsize=16)
def _sender(sender: str) -> bytes:
    """The From header (the same for every message of a campaign)."""
    name, address = parseaddr(_clean("From", sender))
    return _header("From", _mailbox("From", name, address))


@lru_cache(maxsize=64)
def _fixed(name: str, value: str) -> bytes:
    """A header whose value is the same for a campaign's every message (List-Id,
    Feedback-ID); raises :class:`HeaderInjection` (and caches nothing) like ``_clean``."""
    return _header(name, _clean(name, value))


_date: tuple[int, bytes] = (-1, b"")


def _date_header() -> bytes:
    """``Date`` for now, to the second (made once a second: a campaign sends thousands)."""
    global _date
    now = datetime.now(UTC).replace(microsecond=0)
    second = int(now.timestamp())
    if _date[0] != second:
        _date = (second, _header("Date", format_datetime(now)))
    return _date[1]


def build_message(
    rendered: RenderedMessage,
    *,
    sender: str,
    to_address: str,
    to_name: str | None,
    message_id: str,
    list_unsubscribe_url: str | None,
    unsubscribe_mailto: str | None,
    list_id: str | None = None,
    feedback_id: str | None = None,
    bulk: bool = False,
) -> bytes:
    """The message as bytes: multipart/alternative (text, then HTML), UTF-8, CRLF.

    Marketing mail (``list_unsubscribe_url`` given) carries ``List-Unsubscribe`` with the
    https link and a mailto, and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``;
    ``list_id``, ``feedback_id`` and ``bulk`` add ``List-Id``, ``Feedback-ID`` and
    ``Precedence: bulk``. ``Date`` is in UTC as ``+0000`` (RFC 5322; ``GMT`` is obsolete).
    Raises :class:`HeaderInjection`, naming the header, when a value for any header carries
    a line break, NUL or other control character; nothing is stripped.
    """
    subject = _clean("Subject", rendered.subject)
    if subject.isascii():
        subject_value: str | Header = subject
    else:
        subject_value = Header(subject, "utf-8", header_name="Subject")
    boundary = b"=_kt" + secrets.token_hex(12).encode("ascii")
    head = [
        _sender(sender),
        _header("To", _mailbox("To", to_name, to_address)),
        _header("Subject", subject_value),
        _date_header(),
        _header("Message-ID", _clean("Message-ID", message_id)),
    ]
    if list_id:
        head.append(_fixed("List-Id", list_id))
    if feedback_id:
        head.append(_fixed("Feedback-ID", feedback_id))
    if bulk:
        head.append(b"Precedence: bulk\r\n")
    if list_unsubscribe_url:
        head.append(_list_unsubscribe(list_unsubscribe_url, unsubscribe_mailto))
        head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    text, html = rendered.encoded or (encode(rendered.text), encode(rendered.html))
    # Content-Type is 76 octets with its 28-character boundary: never folded (78).
    head += (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="',
        boundary,
        b'"\r\n\r\n--',
        boundary,
        _PLAIN_HEAD,
        text,
        b"\r\n--",
        boundary,
        _HTML_HEAD,
        html,
        b"\r\n--",
        boundary,
        b"--\r\n",
    )
    return b"".join(head)
