"""Rendering: the shipped templates, the once-per-campaign fast path, and refused templates."""

from __future__ import annotations

import logging
from html import escape, unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from dispatcher.sending import rendering
from dispatcher.sending.quoted_printable import encode
from dispatcher.sending.rendering import (
    CampaignView,
    Recipient,
    TemplateProblem,
    check_campaign,
    list_templates,
    prepare_campaign,
    template_purpose,
)
from dispatcher.settings import Settings
from tests.conftest import settings_for

SHIPPED = ["genre-spotlight", "new-releases", "terms-update"]

RECIPIENTS = [
    Recipient("Ann", "Lee", "https://kt.example/u/AAA.bbb-_", "https://kt.example/preferences/A"),
    Recipient(
        "<b>&\"'</b>",
        "O'Brien & <i>Sons</i>",
        "https://kt.example/u/x?a=1&b=<2>",
        'https://kt.example/preferences/x?q="1"&r=2',
    ),
    Recipient("Zoë Łukasz 李", "Müller-Søndergård", "https://kt.example/u/Zoë", "https://p/é"),
    Recipient(None, None, "https://kt.example/u/none", "https://kt.example/preferences/none"),
    Recipient("", "", "https://kt.example/u/empty", "https://kt.example/preferences/empty"),
    Recipient("{{ unsubscribe_url }} {% raw %}", "zq0x1q &amp;", "https://u/3", "https://p/3"),
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Rendering needs no database: plain settings with the shipped templates."""
    return settings_for(tmp_path / "var")


def view(template: str, purpose: str | None = None, subject: str = "New music") -> CampaignView:
    return CampaignView(
        id=7,
        name="Jazz & Blues",
        subject=subject,
        purpose=purpose or ("service_notice" if template == "terms-update" else "marketing"),
        template=template,
    )


def write_template(
    root: Path, name: str, *, html: str, text: str, purpose: str = "marketing"
) -> None:
    folder = root / "email" / name
    folder.mkdir(parents=True)
    (folder / "template.toml").write_text(f'purpose = "{purpose}"\n')
    (folder / "body.html").write_text(html)
    (folder / "body.txt").write_text(text)


GOOD_HTML = (
    "<html><head><style>p { color: #123456; }</style></head><body>"
    '<p>Hi {{ greeting_name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a> '
    "{{ postal_address }}</p></body></html>"
)
GOOD_TEXT = "Hi {{ greeting_name }}\nUnsubscribe: {{ unsubscribe_url }}\n{{ postal_address }}\n"


@pytest.fixture
def custom(tmp_path: Path, settings: Settings) -> tuple[Path, Settings]:
    """A templates folder of our own, with the shipped layout available to extend."""
    root = tmp_path / "templates"
    (root / "email").mkdir(parents=True)
    layout = settings.templates_dir / "email" / "_layout"
    (root / "email" / "_layout").mkdir()
    for file in layout.iterdir():
        (root / "email" / "_layout" / file.name).write_text(file.read_text())
    return root, settings.replace(templates_dir=root)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.styled: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.hrefs.append(found["href"] or "")
        if found.get("style"):
            self.styled.append(tag)


def links(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


# --- the shipped templates ---------------------------------------------------------------


def test_shipped_templates_are_listed_with_their_purpose(settings: Settings) -> None:
    assert list_templates(settings) == SHIPPED
    assert [template_purpose(settings, t) for t in SHIPPED] == [
        "marketing",
        "marketing",
        "service_notice",
    ]


@pytest.mark.parametrize("template", SHIPPED)
def test_every_shipped_template_passes_the_check(settings: Settings, template: str) -> None:
    """The check accepts it, and what it accepted really carries what the check promises:
    a one-line subject, the postal address in both parts, and (marketing) the recipient's
    own unsubscribe link in both parts, for every kind of recipient."""
    campaign = view(template)
    check_campaign(settings, campaign)
    prepared = prepare_campaign(settings, campaign)
    for recipient in RECIPIENTS:
        message = prepared.render(recipient)
        assert message.subject and "\n" not in message.subject
        html_links = [unquote(unescape(href)) for href in links(message.html).hrefs]
        assert settings.postal_address in message.text
        assert escape(settings.postal_address, quote=False) in message.html
        if campaign.purpose == "marketing":
            assert recipient.unsubscribe_url in message.text
            assert recipient.unsubscribe_url in html_links
        else:
            assert recipient.unsubscribe_url not in message.text + "".join(html_links)


@pytest.mark.parametrize("template", SHIPPED)
def test_fast_path_equals_full_render_for_every_shipped_template(
    settings: Settings, template: str
) -> None:
    """The once-per-campaign render gives, byte for byte, what a full Jinja render plus
    premailer for each recipient gives; subjects use recipient fields too."""
    campaign = view(template, subject="{{ greeting_name }}, {{ campaign.name }}: new for you")
    prepared = prepare_campaign(settings, campaign)
    assert prepared.fast
    encoded = 0
    for recipient in RECIPIENTS:
        fast, full = prepared.render(recipient), prepared.render_full(recipient)
        assert fast == full
        if fast.encoded is not None:  # filled in: its parts come quoted-printable already
            assert fast.encoded == (encode(full.text), encode(full.html))
            encoded += 1
    assert encoded >= 1


@pytest.mark.parametrize("template", ["genre-spotlight", "new-releases"])
def test_marketing_mail_carries_the_links_escaped_and_css_inlined(
    settings: Settings, template: str
) -> None:
    recipient = RECIPIENTS[1]
    message = prepare_campaign(settings, view(template)).render(recipient)
    found = links(message.html)
    assert recipient.unsubscribe_url in found.hrefs  # the parser unescapes &amp; again
    assert recipient.preferences_url in found.hrefs
    assert "&lt;b&gt;&amp;" in message.html and "<b>&" not in message.html
    assert settings.postal_address in message.html
    assert {"a", "td", "p"} <= set(found.styled)  # CSS inlined by premailer
    assert "@media only screen" in message.html  # kept for clients that read <style>
    assert recipient.unsubscribe_url in message.text and settings.postal_address in message.text
    assert "<b>&\"'</b>" in message.text  # the text part is not HTML-escaped


def test_missing_first_name_gets_a_greeting(settings: Settings) -> None:
    message = prepare_campaign(settings, view("new-releases")).render(RECIPIENTS[3])
    assert "Hi there," in message.text and "Hi there," in message.html


def test_recipient_data_is_never_evaluated_as_a_template(settings: Settings) -> None:
    recipient = RECIPIENTS[5]
    message = prepare_campaign(settings, view("new-releases")).render(recipient)
    assert "Hi {{ unsubscribe_url }} {% raw %}," in message.text


def test_service_notice_has_preferences_and_address_but_no_unsubscribe(
    settings: Settings,
) -> None:
    recipient = RECIPIENTS[0]
    message = prepare_campaign(settings, view("terms-update")).render(recipient)
    for part in (message.html, message.text):
        assert recipient.preferences_url in part and settings.postal_address in part
        assert recipient.unsubscribe_url not in part
    assert recipient.preferences_url in links(message.html).hrefs


def test_css_is_inlined_once_per_campaign_not_per_recipient(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting_inliner(monkeypatch)
    prepared = prepare_campaign(settings, view("new-releases"))
    at_prepare = len(calls)
    ordinary = [RECIPIENTS[0], RECIPIENTS[3], RECIPIENTS[4], RECIPIENTS[5]]
    for _ in range(50):
        for recipient in ordinary:
            prepared.render(recipient)
    assert len(calls) == at_prepare
    # A URL lxml would rewrite (a quote, non-ASCII) is not proven: that recipient alone
    # gets the full render, so the result stays right.
    prepared.render(RECIPIENTS[2])
    assert len(calls) == at_prepare + 1


def test_subject_txt_overrides_the_campaign_subject(custom: tuple[Path, Settings]) -> None:
    root, local = custom
    write_template(root, "with-subject", html=GOOD_HTML, text=GOOD_TEXT)
    (root / "email" / "with-subject" / "subject.txt").write_text(
        "{{ greeting_name }}: the {{ campaign.name }} picks\n"
    )
    prepared = prepare_campaign(local, view("with-subject", subject="ignored"))
    assert prepared.render(RECIPIENTS[0]).subject == "Ann: the Jazz & Blues picks"
    assert prepared.render(RECIPIENTS[1]).subject == "<b>&\"'</b>: the Jazz & Blues picks"


# --- falling back to a full render per recipient -----------------------------------------


@pytest.mark.parametrize(
    ("snippet", "expect"),
    [
        ("{{ first_name | upper }}", "ANN"),
        ("{% if first_name %}Dear {{ first_name }}{% else %}Dear friend{% endif %}", "Dear Ann"),
        ("{{ last_name | length }} letters", "3 letters"),
    ],
)
def test_recipient_logic_in_a_template_falls_back_to_full_render(
    custom: tuple[Path, Settings],
    caplog: pytest.LogCaptureFixture,
    snippet: str,
    expect: str,
) -> None:
    root, local = custom
    html = (
        '{% extends "email/_layout/base.html" %}{% block content %}<p>'
        + snippet
        + "</p>{% endblock %}"
    )
    text = '{% extends "email/_layout/base.txt" %}{% block content %}' + snippet + "{% endblock %}"
    write_template(root, "clever", html=html, text=text)
    with caplog.at_level(logging.WARNING, logger="dispatcher.sending.rendering"):
        prepared = prepare_campaign(local, view("clever"))
    assert not prepared.fast
    assert "rendering each recipient in full" in caplog.text
    for sample in rendering.SAMPLE_RECIPIENTS:  # no personal data in the log line
        assert (sample.first_name or "\0") not in caplog.text
    for recipient in RECIPIENTS:
        assert prepared.render(recipient) == prepared.render_full(recipient)
    message = prepared.render(RECIPIENTS[0])
    assert expect in message.text and expect in message.html
    dear = prepared.render(RECIPIENTS[3])
    if "Dear" in snippet:
        assert "Dear friend" in dear.text


# --- refused templates and campaigns -----------------------------------------------------


def test_unknown_template_lists_the_known_ones(settings: Settings) -> None:
    with pytest.raises(TemplateProblem) as caught:
        check_campaign(settings, view("spring-release"))
    message = str(caught.value)
    assert "'spring-release'" in message
    assert all(name in message for name in SHIPPED)


@pytest.mark.parametrize("name", ["_layout", "../templates", "new-releases/../terms-update"])
def test_layout_and_paths_are_not_templates(settings: Settings, name: str) -> None:
    with pytest.raises(TemplateProblem, match="no template named"):
        check_campaign(settings, view(name))


def test_undefined_variable_names_variable_file_and_line(custom: tuple[Path, Settings]) -> None:
    root, local = custom
    html = GOOD_HTML.replace("<p>Hi", "\n\n<p>{{ fist_name }} Hi")
    write_template(root, "spring-release", html=html, text=GOOD_TEXT)
    with pytest.raises(TemplateProblem) as caught:
        check_campaign(local, view("spring-release"))
    message = str(caught.value)
    assert "template 'spring-release'" in message
    assert "'fist_name' is undefined" in message
    assert "body.html line 3" in message
    assert "first_name" in message  # what may be used instead


def test_undefined_variable_in_the_layout_names_the_layout(custom: tuple[Path, Settings]) -> None:
    root, local = custom
    base = root / "email" / "_layout" / "base.txt"
    base.write_text(base.read_text().replace("{{ postal_address }}", "{{ postal_adress }}"))
    write_template(
        root,
        "uses-layout",
        html=GOOD_HTML,
        text='{% extends "email/_layout/base.txt" %}{% block content %}Hi{% endblock %}',
    )
    with pytest.raises(TemplateProblem, match=r"_layout/base\.txt line \d+: 'postal_adress'"):
        check_campaign(local, view("uses-layout"))


def test_undefined_variable_in_the_subject(settings: Settings) -> None:
    with pytest.raises(TemplateProblem, match="the subject line 1: 'fist_name' is undefined"):
        check_campaign(settings, view("new-releases", subject="Hi {{ fist_name }}"))


def test_syntax_error_names_file_and_line(custom: tuple[Path, Settings]) -> None:
    root, local = custom
    write_template(root, "broken", html=GOOD_HTML, text=GOOD_TEXT + "\n{% if %}\n")
    with pytest.raises(TemplateProblem, match=r"'broken': body\.txt line 5"):
        check_campaign(local, view("broken"))


@pytest.mark.parametrize("part", ["body.html", "body.txt"])
def test_marketing_template_without_unsubscribe_link_is_refused(
    custom: tuple[Path, Settings], part: str
) -> None:
    root, local = custom
    html, text = GOOD_HTML, GOOD_TEXT
    if part == "body.html":
        html = html.replace('<a href="{{ unsubscribe_url }}">Unsubscribe</a>', "")
    else:
        text = text.replace("Unsubscribe: {{ unsubscribe_url }}", "")
    write_template(root, "no-way-out", html=html, text=text)
    with pytest.raises(TemplateProblem) as caught:
        check_campaign(local, view("no-way-out"))
    assert f"'no-way-out': {part} lacks the unsubscribe link" in str(caught.value)


@pytest.mark.parametrize("part", ["body.html", "body.txt"])
def test_marketing_template_without_postal_address_is_refused(
    custom: tuple[Path, Settings], part: str
) -> None:
    root, local = custom
    html, text = GOOD_HTML, GOOD_TEXT
    if part == "body.html":
        html = html.replace("{{ postal_address }}", "")
    else:
        text = text.replace("{{ postal_address }}", "")
    write_template(root, "no-address", html=html, text=text)
    with pytest.raises(TemplateProblem, match=f"{part} lacks the postal address"):
        check_campaign(local, view("no-address"))


def test_service_notice_needs_no_unsubscribe_link_but_may_have_one(
    custom: tuple[Path, Settings],
) -> None:
    root, local = custom
    write_template(
        root, "notice-with-link", html=GOOD_HTML, text=GOOD_TEXT, purpose="service_notice"
    )
    write_template(
        root, "notice-plain", html="<p>{{ postal_address }}</p>", text="x", purpose="service_notice"
    )
    with_link = view("notice-with-link", purpose="service_notice")
    plain = view("notice-plain", purpose="service_notice")
    check_campaign(local, with_link)
    check_campaign(local, plain)
    ann = RECIPIENTS[0]
    linked = prepare_campaign(local, with_link).render(ann)
    assert ann.unsubscribe_url in links(linked.html).hrefs
    assert ann.unsubscribe_url in linked.text
    bare = prepare_campaign(local, plain).render(ann)
    assert ann.unsubscribe_url not in bare.html + bare.text
    assert escape(local.postal_address, quote=False) in bare.html


@pytest.mark.parametrize(
    ("template", "purpose", "message"),
    [
        ("terms-update", "marketing", "'terms-update' is for service_notice mail"),
        ("new-releases", "service_notice", "'new-releases' is for marketing mail"),
    ],
)
def test_purpose_mismatch_is_refused(
    settings: Settings, template: str, purpose: str, message: str
) -> None:
    with pytest.raises(TemplateProblem, match=message):
        check_campaign(settings, view(template, purpose=purpose))


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("Hello\r\nBcc: victim@example.com", "line break"),
        ("Hello\nthere", "line break"),
        ("Hello {{ '\\n' }} there", "line break"),
        ("Hello\x0bthere", "control character"),
        ("   ", "the subject is empty"),
        ("{{ '' }}", "the subject is empty"),
        ("x" * 251, "longer than 250"),
    ],
)
def test_bad_subject_is_refused(settings: Settings, subject: str, message: str) -> None:
    with pytest.raises(TemplateProblem, match=message):
        check_campaign(settings, view("new-releases", subject=subject))


def test_template_that_declares_no_purpose_is_refused(custom: tuple[Path, Settings]) -> None:
    root, local = custom
    write_template(root, "vague", html=GOOD_HTML, text=GOOD_TEXT, purpose="newsletter")
    with pytest.raises(TemplateProblem, match='must say purpose = "marketing"'):
        check_campaign(local, view("vague"))


def test_template_missing_a_part_is_refused(custom: tuple[Path, Settings]) -> None:
    root, local = custom
    write_template(root, "half", html=GOOD_HTML, text=GOOD_TEXT)
    (root / "email" / "half" / "body.txt").unlink()
    with pytest.raises(TemplateProblem, match="'half' has no body.txt"):
        check_campaign(local, view("half"))


@pytest.mark.parametrize("html", ["", "  {{ '' }}\n"])
def test_html_part_that_renders_to_nothing_is_refused(
    custom: tuple[Path, Settings], html: str
) -> None:
    root, local = custom
    write_template(root, "blank", html=html, text="x", purpose="service_notice")
    with pytest.raises(TemplateProblem, match="'blank': body.html renders to nothing"):
        check_campaign(local, view("blank", purpose="service_notice"))


# --- a render prepared in one process, used in another -----------------------------------


def _counting_inliner(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts premailer's inlining calls (rendering imports it on first use, so the class
    itself is patched)."""
    import premailer

    calls: list[int] = []
    original = premailer.Premailer.transform

    def counting(self: object, *args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(premailer.Premailer, "transform", counting)
    return calls


@pytest.mark.parametrize("template", SHIPPED)
def test_a_stored_render_gives_the_same_mail_without_inlining_css_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    first = prepare_campaign(settings, view(template))
    stored = first.stored()
    assert stored is not None
    calls = _counting_inliner(monkeypatch)
    again = prepare_campaign(settings, view(template), stored=stored)
    assert again.fingerprint == first.fingerprint and again.fast
    proven = [RECIPIENTS[0], RECIPIENTS[3], RECIPIENTS[4], RECIPIENTS[5]]
    for recipient in proven:
        assert again.render(recipient) == first.render(recipient)
        assert again.render(recipient) == again.render_full(recipient)  # the reference
    assert len(calls) == len(proven)  # the references only: reusing the render inlined nothing


def test_a_stored_render_is_not_used_once_what_it_read_has_changed(
    custom: tuple[Path, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, local = custom
    write_template(root, "editable", html=GOOD_HTML, text=GOOD_TEXT)
    stored = prepare_campaign(local, view("editable")).stored()
    assert stored is not None
    (root / "email" / "editable" / "body.txt").write_text("Edited. " + GOOD_TEXT)
    edited = prepare_campaign(local, view("editable"), stored=stored)
    assert edited.fingerprint != stored[0]
    assert edited.render(RECIPIENTS[0]).text.startswith("Edited. Hi Ann")
    # The settings the templates see, the subject and the campaign are part of it too.
    moved = local.replace(postal_address="1 New Street, Paris")
    assert prepare_campaign(moved, view("editable"), stored=stored).fingerprint != stored[0]
    other = prepare_campaign(local, view("editable", subject="Other"), stored=stored)
    assert other.fingerprint != stored[0]


def test_stored_parts_that_cannot_be_read_are_prepared_again(settings: Settings) -> None:
    fingerprint, _ = prepare_campaign(settings, view("new-releases")).stored() or ("", "")
    for broken in ("not json", "[1, 2]", '[["a"], ["b"]]'):
        prepared = prepare_campaign(settings, view("new-releases"), stored=(fingerprint, broken))
        assert prepared.render(RECIPIENTS[0]) == prepared.render_full(RECIPIENTS[0])


def test_a_template_rendered_in_full_per_recipient_stores_nothing(
    custom: tuple[Path, Settings],
) -> None:
    root, local = custom
    html = GOOD_HTML.replace("{{ greeting_name }}", "{{ first_name | upper }}")
    write_template(root, "clever", html=html, text=GOOD_TEXT)
    assert prepare_campaign(local, view("clever")).stored() is None


@pytest.mark.parametrize(
    ("before", "after", "fragment"),
    [
        # The URL is in the HTML, but as text or an attribute of something else.
        (
            '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
            '<span title="{{ unsubscribe_url }}">Unsubscribe</span>',
            "the unsubscribe link is not an element of the message",
        ),
        (
            '<p><a href="{{ unsubscribe_url }}">',
            '<p style="display:none"><a href="{{ unsubscribe_url }}">',
            'the unsubscribe link is hidden: a <p> around it has "display: none"',
        ),
        (
            "{{ postal_address }}</p>",
            "<span hidden>{{ postal_address }}</span></p>",
            "the postal address is hidden: a <span> around it has the hidden attribute",
        ),
    ],
)
def test_a_template_whose_footer_is_there_but_not_shown_is_refused(
    custom: tuple[Path, Settings], before: str, after: str, fragment: str
) -> None:
    """The final HTML (CSS inlined) read with lxml: text in the HTML is not enough."""
    root, local = custom
    write_template(root, "unseen", html=GOOD_HTML.replace(before, after), text=GOOD_TEXT)
    with pytest.raises(TemplateProblem) as caught:
        check_campaign(local, view("unseen"))
    assert f"template 'unseen': body.html: {fragment}" in str(caught.value)
