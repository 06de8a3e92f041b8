"""Staff-written content (the console) rendered through the one sandbox: the wrapper around a
layout, staff text checked before it runs, and the sandbox's limits applied to staff text."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

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


def test_the_subject_in_a_staff_body_is_escaped_once(settings: Settings) -> None:
    campaign = staff_view(subject="Rock & Roll", body="<h1>{{ subject }}</h1>")
    message = prepare_campaign(settings, campaign).render(ANN)
    assert "Rock &amp;amp; Roll" not in message.html
    assert "Rock &amp; Roll</h1>" in message.html
    assert "Rock & Roll" in message.text
