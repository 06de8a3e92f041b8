"""Building the MIME message: headers that cannot be injected, both parts, RFC 8058."""

from __future__ import annotations

from email import policy
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, parseaddr

from dispatcher.rendering import RenderedMessage

# SMTP wants CRLF line ends; smtplib does not convert them in a bytes message.
_CRLF = policy.compat32.clone(linesep="\r\n")
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP
_UTF8_QP.header_encoding = QP


class HeaderInjection(ValueError):
    """Data meant for a header contains a line break or NUL; the message names the header."""


def _clean(header: str, value: str) -> str:
    if any(ch in value for ch in "\r\n\x00"):
        raise HeaderInjection(f"the {header} header would contain a line break; not sent")
    return value


def message_id_for(campaign_id: int, contact_id: int, sender_domain: str) -> str:
    """Stable per (campaign, contact): a resend of the same message has the same id."""
    return f"<c{campaign_id}.r{contact_id}@{sender_domain}>"


def _text_part(body: str, subtype: str) -> MIMEText:
    # Quoted-printable keeps lines under 998 octets whatever the template does.
    return MIMEText(body, subtype, _charset=_UTF8_QP)  # type: ignore[arg-type]


def build_message(
    rendered: RenderedMessage,
    *,
    sender: str,
    to_address: str,
    to_name: str | None,
    message_id: str,
    list_unsubscribe_url: str | None,
    unsubscribe_mailto: str | None,
) -> bytes:
    """The message as bytes: multipart/alternative (text, then HTML), UTF-8.

    Marketing mail (``list_unsubscribe_url`` given) carries ``List-Unsubscribe`` with the
    https link and a mailto, and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``.
    """
    subject = _clean("Subject", rendered.subject)
    name = _clean("To", to_name or "")
    address = _clean("To", to_address)
    message = MIMEMultipart("alternative")
    sender_name, sender_address = parseaddr(_clean("From", sender))
    message["From"] = formataddr((sender_name, sender_address))
    message["To"] = formataddr((name, address), charset="utf-8") if name else address
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = _clean("Message-ID", message_id)
    if list_unsubscribe_url:
        targets = [f"<{_clean('List-Unsubscribe', list_unsubscribe_url)}>"]
        if unsubscribe_mailto:
            mailto = _clean("List-Unsubscribe", unsubscribe_mailto)
            targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
        message["List-Unsubscribe"] = ", ".join(targets)
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.attach(_text_part(rendered.text, "plain"))
    message.attach(_text_part(rendered.html, "html"))
    return message.as_bytes(policy=_CRLF)
