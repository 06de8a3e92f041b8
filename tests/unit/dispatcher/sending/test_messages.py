"""Building the MIME message: parsed back with the stdlib and checked header by header."""

from __future__ import annotations

import email
import email.policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from dispatcher.sending.messages import (
    HeaderInjection,
    build_message,
    feedback_id_for,
    list_id_for,
    message_id_for,
)
from dispatcher.sending.rendering import CampaignView, Recipient, RenderedMessage, prepare_campaign
from dispatcher.settings import Settings
from tests.conftest import settings_for

SENDER = "Killer Tracks <info@killertracks.com>"
UNSUBSCRIBE = "https://kt.example/u/eyJhIjoxfQ.Zx-_9"
MAILTO = "unsubscribe@killertracks.com"
RENDERED = RenderedMessage(
    subject="New in the library: Neon Causeway",
    text="Hi Ann,\nnew tracks.\nUnsubscribe: " + UNSUBSCRIBE + "\n",
    html='<p>Hi Ann,</p><p><a href="' + UNSUBSCRIBE + '">Unsubscribe</a></p>',
)


def build(rendered: RenderedMessage = RENDERED, **overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "sender": SENDER,
        "to_address": "ann@example.com",
        "to_name": "Ann Lee",
        "message_id": message_id_for(12, "5eed", 345, "killertracks.com", "0" * 20),
        "list_unsubscribe_url": UNSUBSCRIBE,
        "unsubscribe_mailto": MAILTO,
    }
    arguments.update(overrides)
    return build_message(rendered, **arguments)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> list[EmailMessage]:
    found = [p for p in message.iter_parts() if isinstance(p, EmailMessage)]
    assert len(found) == 2
    return found


def body(part: EmailMessage) -> str:
    return str(part.get_content()).replace("\r\n", "\n")


def test_marketing_message_has_every_header_and_both_parts() -> None:
    raw = build()
    message = parse(raw)
    assert message.defects == []
    assert message["From"] == SENDER
    assert message["To"] == "Ann Lee <ann@example.com>"
    assert message["Subject"] == RENDERED.subject
    assert message["Message-ID"] == f"<c12.5eed.r345.{'0' * 20}@killertracks.com>"
    assert message["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert message["Date"].endswith(" +0000") and "GMT" not in message["Date"]
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>, <mailto:{MAILTO}?subject=unsubscribe>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    for part in (text, html):
        assert part.defects == []
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert body(text) == RENDERED.text
    assert body(html) == RENDERED.html


def test_lines_end_in_crlf_and_stay_short() -> None:
    long_line = "Ünïcödé " * 400  # one 3,200-character line
    rendered = RenderedMessage("s", long_line + "\n.\nFrom here on\n--=_kt\n", long_line)
    raw = build(rendered, list_unsubscribe_url="https://kt.example/u/" + "T" * 160)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert max(map(len, rest.split(b"\r\n"))) <= 76  # quoted-printable's limit
    # A header is folded under 78 octets except where a URL cannot be broken.
    assert all(len(line) <= 78 or b"TTTT" in line for line in head.split(b"\r\n"))
    message = parse(raw)
    text, html = parts(message)
    assert body(text) == rendered.text and body(html) == rendered.html
    assert message["List-Unsubscribe"].startswith("<https://kt.example/u/TTTT")


def test_service_notice_has_no_list_unsubscribe_headers() -> None:
    message = parse(build(list_unsubscribe_url=None, unsubscribe_mailto=None))
    assert message["List-Unsubscribe"] is None
    assert message["List-Unsubscribe-Post"] is None


def test_list_unsubscribe_without_mailto_has_only_the_https_link() -> None:
    message = parse(build(unsubscribe_mailto=None))
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_non_ascii_subject_is_rfc2047_encoded() -> None:
    subject = "Neue Musik für dich, Zoë — 新曲 " + "lange Zeile " * 10
    raw = build(RenderedMessage(subject, "t", "<p>h</p>"))
    assert raw.isascii()
    assert b"Subject: =?utf-8?" in raw
    assert parse(raw)["Subject"] == subject


@pytest.mark.parametrize(
    "name",
    ["Zoë Łukasz", 'Ann "The Voice" Lee', "Lee, Ann", "O'Brien (sales) <boss>", "Ann\\Lee"],
)
def test_display_names_round_trip(name: str) -> None:
    raw = build(to_name=name)
    assert raw.isascii()
    [address] = parse(raw)["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, "ann@example.com")


@pytest.mark.parametrize("name", [None, "", "   "])
def test_missing_name_gives_the_bare_address(name: str | None) -> None:
    assert parse(build(to_name=name))["To"] == "ann@example.com"


def test_long_names_are_folded_and_decode_to_the_name() -> None:
    ascii_name, other_name = "Ann " * 30 + 'Lee, "Jr"', "Zoë Łukasz-Müller " * 5 + "李"
    for name in (ascii_name, other_name):
        head = build(to_name=name).partition(b"\r\n\r\n")[0]
        assert max(len(line) for line in head.split(b"\r\n")) <= 78
    [address] = parse(build(to_name=ascii_name))["To"].addresses
    assert address.display_name == ascii_name
    # Several encoded words: decoded word by word as RFC 2047 says (policy.default's
    # address parser puts a space between words that split a name mid-word).
    to = email.message_from_bytes(build(to_name=other_name))["To"]
    assert str(make_header(decode_header(to))) == f"{other_name} <ann@example.com>"


def test_overlong_display_name_is_left_out() -> None:
    assert parse(build(to_name="A" * 500))["To"] == "ann@example.com"


def test_internationalised_address_is_written_as_utf8() -> None:
    raw = build(to_address="zoë@exämple.de", to_name="Zoë")
    assert '"Zoë" <zoë@exämple.de>'.encode() in raw
    message = email.message_from_bytes(raw, policy=email.policy.SMTPUTF8)
    assert message.defects == []


def test_message_id_is_stable_per_campaign_and_contact() -> None:
    tag = "0123456789abcdef0123"
    expected = f"<c3.ab12.r9.{tag}@killertracks.com>"
    assert message_id_for(3, "ab12", 9, "killertracks.com", tag) == expected
    assert message_id_for(3, "n", 9, "k.com", tag) == message_id_for(3, "n", 9, "k.com", tag)
    assert message_id_for(3, "n", 9, "k.com", tag) != message_id_for(3, "n", 10, "k.com", tag)
    # Another installation (or the same after a reset) draws another nonce for campaign 3.
    assert message_id_for(3, "n", 9, "k.com", tag) != message_id_for(3, "m", 9, "k.com", tag)


def test_bulk_headers_list_id_and_feedback_id() -> None:
    list_id = list_id_for("Killer Tracks", "killertracks.com", "marketing")
    feedback = feedback_id_for(12, "marketing", "killertracks.com")
    message = parse(build(list_id=list_id, feedback_id=feedback, bulk=True))
    assert message["List-Id"] == "Killer Tracks marketing <marketing.killertracks.com>"
    assert message["Feedback-ID"] == "c12:marketing:killertracks"
    assert message["Precedence"] == "bulk"
    plain = parse(build(list_unsubscribe_url=None, unsubscribe_mailto=None))
    assert (plain["List-Id"], plain["Feedback-ID"], plain["Precedence"]) == (None, None, None)


@pytest.mark.parametrize(
    ("field", "value", "header"),
    [
        ("subject", "Hi\r\nBcc: victim@example.com", "Subject"),
        ("subject", "Hi\nthere", "Subject"),
        ("subject", "Hi\rthere", "Subject"),
        ("subject", "Hi\x00there", "Subject"),
        ("subject", "Hi\x0bthere", "Subject"),
        ("to_name", "Ann\r\nBcc: victim@example.com", "To"),
        ("to_name", "Ann\n", "To"),
        ("to_address", "ann@example.com\r\nBcc: victim@example.com", "To"),
        (
            "list_unsubscribe_url",
            "https://kt.example/u/x\r\nBcc: v@example.com",
            "List-Unsubscribe",
        ),
        ("unsubscribe_mailto", "u@kt.example\n", "List-Unsubscribe"),
        ("message_id", "<c1.r1@kt>\r\nBcc: v@example.com", "Message-ID"),
        ("sender", "Killer Tracks <info@killertracks.com>\r\nBcc: v@example.com", "From"),
    ],
)
def test_line_breaks_in_header_data_are_refused_not_stripped(
    field: str, value: str, header: str
) -> None:
    if field == "subject":
        with pytest.raises(HeaderInjection, match=f"the {header} header"):
            build(RenderedMessage(value, "t", "h"))
    else:
        with pytest.raises(HeaderInjection, match=f"the {header} header"):
            build(RENDERED, **{field: value})


def test_non_ascii_unsubscribe_url_is_refused() -> None:
    with pytest.raises(HeaderInjection, match="List-Unsubscribe"):
        build(list_unsubscribe_url="https://kt.example/u/zoë")


# --- rendered by the shipped templates, then built -------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path / "var")


@pytest.mark.parametrize(
    ("template", "purpose"),
    [
        ("new-releases", "marketing"),
        ("genre-spotlight", "marketing"),
        ("terms-update", "service_notice"),
    ],
)
def test_shipped_templates_build_into_valid_messages(
    settings: Settings, template: str, purpose: str
) -> None:
    campaign = CampaignView(
        3, "Spring", "{{ greeting_name }}, new music for you", purpose, template
    )
    recipient = Recipient(
        "Zoë <b>", "O'Brien", "https://kt.example/u/tok.en", "https://kt.example/preferences/tok"
    )
    rendered = prepare_campaign(settings, campaign).render(recipient)
    marketing = purpose == "marketing"
    raw = build(
        rendered,
        sender=settings.sender,
        to_name="Zoë <b> O'Brien",
        list_unsubscribe_url=recipient.unsubscribe_url if marketing else None,
        unsubscribe_mailto=settings.unsubscribe_mailto if marketing else None,
    )
    message = parse(raw)
    assert message.defects == []
    assert message["Subject"] == "Zoë <b>, new music for you"
    assert message["To"].addresses[0].display_name == "Zoë <b> O'Brien"
    text, html = parts(message)
    assert "Zoë <b>" in body(text) and "Zoë &lt;b&gt;" in body(html)
    assert settings.postal_address in body(text) and settings.postal_address in body(html)
    assert recipient.preferences_url in body(html)
    assert (recipient.unsubscribe_url in body(html)) is marketing
    assert (message["List-Unsubscribe"] is not None) is marketing


def test_line_break_in_a_first_name_used_by_the_subject_stops_the_message(
    settings: Settings,
) -> None:
    campaign = CampaignView(
        3, "Spring", "{{ greeting_name }}, new music", "marketing", "new-releases"
    )
    recipient = Recipient("Ann\r\nBcc: victim@example.com", None, "https://u/1", "https://p/1")
    rendered = prepare_campaign(settings, campaign).render(recipient)
    with pytest.raises(HeaderInjection, match="the Subject header would contain a line break"):
        build(rendered)


def test_any_line_end_in_a_body_becomes_crlf() -> None:
    rendered = RenderedMessage("s", "one\r\ntwo\rthree\nfour", "<p>a</p>\r<p>b</p>")
    raw = build(rendered)
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    text, html = parts(parse(raw))
    assert body(text) == "one\ntwo\nthree\nfour" and body(html) == "<p>a</p>\n<p>b</p>"
