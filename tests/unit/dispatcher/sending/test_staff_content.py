"""Staff-written content (the console) rendered through the one sandbox: the wrapper around a
layout, staff text checked before it runs, and the sandbox's limits applied to staff text."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dispatcher.sending import staff_text
from dispatcher.sending.markup import footer_problem
from dispatcher.sending.rendering import (
    CampaignView,
    Recipient,
    TemplateProblem,
    check_campaign,
    prepare_campaign,
)
from dispatcher.sending.sandbox import file_environment, sample_context
from dispatcher.sending.staff_text import StaffContent
from dispatcher.settings import Settings
from tests.conftest import settings_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path / "var")


def staff_view(**content: str | None) -> CampaignView:
    fields: dict[str, str | None] = {
        "subject": "News for {{ greeting_name }}",
        "preheader": "",
        "body_format": "html",
        "body": "<p>Hello {{ first_name }}</p>",
        "body_text": None,
        "layout": "_layout",
        **content,
    }
    staff = StaffContent(version=3, **fields)  # type: ignore[arg-type]
    return CampaignView(9, "Staff", "unused", "marketing", "_layout", content=staff)


def test_staff_content_renders_in_its_layout_with_values_escaped(settings: Settings) -> None:
    campaign = staff_view(preheader="Out now")
    check_campaign(settings, campaign)
    message = prepare_campaign(settings, campaign).render(
        Recipient("<b>Ann</b>", None, "https://kt.example/u/A", "https://kt.example/p/A")
    )
    assert message.subject == "News for <b>Ann</b>"
    assert "Hello &lt;b&gt;Ann&lt;/b&gt;</p>" in message.html
    assert "Out now" in message.html and "https://kt.example/u/A" in message.html
    assert "Hello <b>Ann</b>" in message.text and settings.postal_address in message.text


def test_the_staff_wrapper_is_loaded_by_the_sandboxed_file_environment(
    settings: Settings,
) -> None:
    env = file_environment(settings.templates_dir)
    assert isinstance(env, ImmutableSandboxedEnvironment)
    values = {**sample_context(settings), "staff_body": "STAFF-BODY"}
    assert "STAFF-BODY" in env.get_template("staff/_layout/body.txt").render(values)
    for bad in ('staff/a"b/body.html', "staff/../body.html", "staff/_layout/other.html"):
        with pytest.raises(TemplateNotFound):
            env.get_template(bad)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"body": "<p>{{ ''.__class__ }}</p>"}, "'__class__' is not something"),
        ({"body": "<p>{{ campaign }}</p>"}, "'campaign' is undefined"),
        ({"subject": "{{ subject }}"}, "'subject' is undefined"),
        ({"body_text": "{{ x|attr('_' ~ '_class__') }}"}, "'x' is undefined"),
        ({"body": "{% include 'email/_layout/base.html' %}"}, "cannot extend or include"),
        # The shared sandbox's cap on repetition applies to staff text too.
        ({"body": "<p>{{ 'x' * 5000000 }}</p>"}, "repetition that large"),
    ],
)
def test_staff_text_outside_the_sandbox_is_refused_naming_the_version(
    settings: Settings, content: dict[str, str], fragment: str
) -> None:
    with pytest.raises(TemplateProblem, match="content version 3") as caught:
        prepare_campaign(settings, staff_view(**content))
    assert fragment in str(caught.value)


def test_an_unknown_layout_is_refused_with_the_known_ones(settings: Settings) -> None:
    with pytest.raises(TemplateProblem, match="no layout named 'nope' .*_layout"):
        prepare_campaign(settings, staff_view(layout="nope"))


UNSUB = "https://kt.example/u/TOKEN"
ANN = Recipient("Ann", None, UNSUB, "https://kt.example/preferences/TOKEN")


# Python's html.parser reads these elements' content as markup; libxml2 (premailer) and
# browsers read it as text, so "</noembed>" inside a quoted attribute ends the element for
# them and what follows opens a hidden <div> around the layout's footer.
@pytest.mark.parametrize("raw", ["noembed", "xmp", "textarea", "noframes", "noscript"])
def test_a_body_cannot_hide_the_footer_behind_a_raw_text_element(
    settings: Settings, raw: str
) -> None:
    body = (
        "<h1>New releases</h1><p>Fresh tracks this week.</p>"
        f'<{raw}><p title=\'</{raw}><div style="display:none" x="\'></p></{raw}>'
    )
    with pytest.raises(TemplateProblem, match=f"content version 3: the body: a <{raw}> element"):
        check_campaign(settings, staff_view(body=body))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        # A box that covers the footer without wrapping it (what the reviewer's screenshot
        # shows): taken out of the flow and painted in the page's colour.
        (
            '<div style="position:relative;height:0"><div style="position:absolute;top:0;'
            'left:-40px;width:620px;height:300px;background:#f2f1ee"></div></div>',
            "position: absolute is not allowed",
        ),
        ('<p style="margin-bottom:-400px">x</p>', "negative values"),
        ('<p style="display: none">x</p>', "display: none is not allowed"),
        ('<p style="visibility:hidden">x</p>', "'visibility' is not allowed"),
        ('<p style="opacity:0">x</p>', "'opacity' is not allowed"),
        ('<p style="font-size:0px">x</p>', "size zero"),
        ('<p style="max-height:0;overflow:hidden">x</p>', "'max-height' is not allowed"),
        ('<p style="transform:translateY(300px)">x</p>', "'transform' is not allowed"),
        ('<p style="width:calc(0px - 9px)">x</p>', "functions other than colours"),
        ('<p style="dis\\play:none">x</p>', "escapes and comments"),
        ("<p hidden>x</p>", "hidden attribute"),
        ("<svg><style>p{}</style></svg>", "<svg> element"),
        ("<template><p>x</p></template>", "<template> element"),
        ("<p>x</p><plaintext>", "<plaintext> element"),
        ("<p>x</p><form><p>y</p></form>", "<form> element"),
        ("<p>x</p><div>", "<div> is never closed"),
        ("<p>x</p></td>", "</td> closes an element"),
        ("<p>x</p><!-- open", "comment is left open"),
        # html.parser ends these elsewhere than libxml2 and browsers do.
        ('<p>x</p><!-- a --!><div x="-->', "no '--' inside"),
        ('<p>x</p><![CDATA[ > <div x=" ]]>">', "declaration"),
        ('<p>x</p></ x="<div>">', "'</' must be followed"),
        ("<p>x</p><?php ?>", "processing instruction"),
        ('<!--[if mso]><div style="display:none"><![endif]-->', "Outlook condition"),
    ],
)
def test_a_body_that_could_hide_or_cover_the_footer_is_refused_saying_why(
    settings: Settings, body: str, fragment: str
) -> None:
    with pytest.raises(TemplateProblem, match="content version 3: the body: ") as caught:
        check_campaign(settings, staff_view(body=body))
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        "<h1>Hello {{ greeting_name }}</h1><p>New tracks, {{ first_name }}.</p>",
        '<p style="color:#333333;font-size:16px;line-height:24px;margin:0 0 16px 0">x</p>'
        '<p style="color:rgb(10, 20, 30);text-align:center;padding:8px 12px">y</p>',
        '<table role="presentation" width="100%"><tr><td style="border-bottom:1px solid #ddd">'
        '<a href="https://kt.example/t/1" style="display:inline-block">Listen</a></td></tr>'
        "</table><p>1 < 2 &amp; 3 > 2<br>done<p>a <!-- a note --> b",
        '<ul><li>one<li>two</ul><img src="https://kt.example/a.png" alt="">'
        '<div style="position:relative">{{ postal_address }}</div>',
    ],
)
def test_ordinary_bodies_still_pass(settings: Settings, body: str) -> None:
    check_campaign(settings, staff_view(body=body))


def test_the_final_message_is_checked_where_the_layout_puts_the_footer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backstop alone (the body's check switched off): lxml reads the final HTML and
    finds the unsubscribe link moved into the body's hidden element."""
    monkeypatch.setattr(staff_text, "check_body_markup", lambda rendered: None)
    body = '<p>x</p><!-- a --!><div hidden x="-->'
    with pytest.raises(TemplateProblem, match="not in the layout's footer"):
        check_campaign(settings, staff_view(body=body))
    check_campaign(settings, staff_view(body="<p>x</p>"))


def test_footer_problem_names_what_hides_the_link() -> None:
    page = (
        '<html><body><div style="color:red; display: none"><p><a href="{u}">Unsubscribe</a>'
        "</p></div><p>{p}</p></body></html>"
    )
    document = page.format(u=UNSUB, p="1 Main St")
    assert footer_problem(document, UNSUB, "1 Main St") == (
        'the unsubscribe link is hidden: a <div> around it has "display: none"'
    )
    assert footer_problem(document.replace("display: none", ""), UNSUB, "1 Main St") is None
    assert "not an element" in (footer_problem(document, UNSUB + "x", "1 Main St") or "")
    hidden_postal = document.replace("display: none", "").replace("<p>1", "<p hidden>1")
    assert footer_problem(hidden_postal, UNSUB, "1 Main St") == (
        "the postal address is hidden: a <p> around it has the hidden attribute"
    )


def test_the_subject_in_a_staff_body_is_escaped_once(settings: Settings) -> None:
    campaign = staff_view(subject="Rock & Roll", body="<h1>{{ subject }}</h1>")
    message = prepare_campaign(settings, campaign).render(ANN)
    assert "Rock &amp;amp; Roll" not in message.html
    assert "Rock &amp; Roll</h1>" in message.html
    assert "Rock & Roll" in message.text
