"""Templates never run code: every staff-written part renders in the sandbox with fixed names.

Each escape below ran a shell command (or mailed Python's internals) under the plain Jinja2
environment the project used before; each payload would create a marker file if it ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.preview import preview_message
from dispatcher.campaigns.services import CampaignError, create_campaign, schedule_campaign
from dispatcher.db import session_scope
from dispatcher.models import Campaign
from dispatcher.sending.rendering import (
    CampaignView,
    Recipient,
    TemplateProblem,
    check_campaign,
    check_template,
    prepare_campaign,
    render_staff_text,
)
from dispatcher.settings import Settings
from tests.factories import make_contact


def escapes(marker: Path) -> list[str]:
    """Known ways out of a plain Jinja2 environment, each touching ``marker`` if it runs."""
    touch = f"touch {marker}"
    return [
        f"{{{{ cycler.__init__.__globals__.os.system('{touch}') }}}}",
        f"{{{{ joiner.__init__.__globals__.os.system('{touch}') }}}}",
        f"{{{{ namespace.__init__.__globals__.os.system('{touch}') }}}}",
        f"{{{{ lipsum.__globals__['os'].system('{touch}') }}}}",
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('"
        + touch
        + "') }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ campaign.__class__.__init__.__globals__ }}",
        "{{ (campaign|attr('__class__')) }}",
        f"{{% set x = cycler %}}{{{{ x.__init__.__globals__.os.system('{touch}') }}}}",
        '{{ "{0.__class__.__init__.__globals__}".format(campaign) }}',
    ]


PAYLOAD_IDS = [
    "cycler",
    "joiner",
    "namespace",
    "lipsum",
    "self-context",
    "subclasses",
    "campaign-globals",
    "attr-filter",
    "set-alias",
    "str-format",
]


def campaigns(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Campaign)) or 0)


@pytest.mark.parametrize("index", range(len(PAYLOAD_IDS)), ids=PAYLOAD_IDS)
def test_a_subject_that_reaches_for_code_is_refused_at_create_and_runs_nothing(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, index: int
) -> None:
    marker = tmp_path / "ran"
    subject = escapes(marker)[index]
    with pytest.raises(CampaignError) as refused, session_scope(session_factory) as session:
        create_campaign(session, settings, name="x", subject=subject, template="new-releases")
    assert "the subject" in str(refused.value) and "line 1" in str(refused.value)
    assert not marker.exists()
    with session_scope(session_factory) as session:
        assert campaigns(session) == 0


@pytest.mark.parametrize("index", range(len(PAYLOAD_IDS)), ids=PAYLOAD_IDS)
def test_a_stored_subject_that_reaches_for_code_never_renders_in_preview_schedule_or_send(
    settings: Settings, session: Session, tmp_path: Path, index: int
) -> None:
    """A row written before the sandbox (or straight into the database) is refused as well."""
    marker = tmp_path / "ran"
    make_contact(session, "ann@example.com", first_name="Ann")
    campaign = Campaign(
        name="old", subject=escapes(marker)[index], template="new-releases", purpose="marketing"
    )
    campaign.status = "draft"
    session.add(campaign)
    session.flush()
    with pytest.raises((TemplateProblem, CampaignError)) as refused:
        preview_message(session, settings, campaign.id, "ann@example.com")
    assert "<class" not in str(refused.value)
    with pytest.raises(CampaignError, match="cannot be scheduled"):
        schedule_campaign(session, settings, campaign.id)
    view = CampaignView(campaign.id, "old", campaign.subject, "marketing", "new-releases")
    with pytest.raises(TemplateProblem):
        prepare_campaign(settings, view)  # what every worker does before its first message
    assert not marker.exists()
    assert campaign.status == "draft"


def custom_template(settings: Settings, tmp_path: Path, html_extra: str) -> Settings:
    import shutil

    root = tmp_path / "templates"
    shutil.copytree(settings.templates_dir, root)
    body = root / "email" / "new-releases" / "body.html"
    lines = body.read_text(encoding="utf-8").splitlines()
    lines.insert(3, html_extra)  # becomes line 4 of body.html
    body.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return settings.replace(templates_dir=root)


def view(subject: str = "New music") -> CampaignView:
    return CampaignView(7, "Jazz", subject, "marketing", "new-releases")


def test_a_body_that_reaches_for_code_is_refused_with_file_and_line_even_in_a_dead_branch(
    settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    payload = f"{{% if false %}}{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}"
    local = custom_template(settings, tmp_path, payload + "{% endif %}")
    with pytest.raises(TemplateProblem, match=r"body.html line 4: '__\w+__' is not something"):
        check_campaign(local, view())
    assert not marker.exists()


def test_an_unknown_name_in_a_branch_never_taken_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    local = custom_template(settings, tmp_path, "{% if not marketing %}{{ discount }}{% endif %}")
    with pytest.raises(TemplateProblem, match=r"body.html line 4: 'discount' is undefined"):
        check_campaign(local, view())


@pytest.mark.parametrize("name", ["range", "dict", "cycler", "joiner", "lipsum", "namespace"])
def test_jinjas_global_helpers_are_not_names_a_template_may_use(
    settings: Settings, name: str
) -> None:
    with pytest.raises(TemplateProblem, match=f"'{name}' is undefined"):
        check_campaign(settings, view(subject=f"{{{{ {name} }}}}"))


def test_an_unsafe_attribute_reached_indirectly_is_refused_when_rendered(
    settings: Settings, tmp_path: Path
) -> None:
    """The reading cannot see ``attr('__cl' ~ 'ass__')``; the sandbox refuses it at render."""
    local = custom_template(settings, tmp_path, "{{ campaign|attr('__cl' ~ 'ass__') }}")
    with pytest.raises(TemplateProblem, match=r"body.html line 4: refused by the sandbox"):
        check_campaign(local, view())


def test_a_template_cannot_make_a_giant_string(settings: Settings) -> None:
    with pytest.raises(TemplateProblem, match="repetition that large"):
        check_campaign(settings, view(subject="{{ 'x' * 100000000 }}"))
    with pytest.raises(TemplateProblem, match="power above"):
        check_campaign(settings, view(subject="{{ 9 ** 999999 }}"))


def test_the_documented_names_still_render(settings: Settings) -> None:
    subject = "{{ greeting_name }}: {{ campaign.name|upper }} from {{ company_name }}"
    prepared = prepare_campaign(settings, view(subject=subject))
    message = prepared.render(Recipient("Ann", None, "https://kt/u/1", "https://kt/p/1"))
    assert message.subject == "Ann: JAZZ from Killer Tracks"


def test_check_template_for_the_console_names_the_field_and_line() -> None:
    check_template("Hi {{ first_name }}, see {{ site_url }}/new", field="subject", subject=True)
    with pytest.raises(TemplateProblem, match=r"^body line 2: '__class__'"):
        check_template("fine\n{{ ''.__class__ }}", field="body")
    with pytest.raises(TemplateProblem, match=r"^subject line 1: 'subject' is undefined"):
        check_template("{{ subject }}", field="subject", subject=True)
    with pytest.raises(TemplateProblem, match="cannot extend or include"):
        check_template('{% include "email/_layout/base.txt" %}', field="body")
    with pytest.raises(TemplateProblem, match=r"^body line 1: unexpected"):
        check_template("{{ first_name ", field="body")


def test_render_staff_text_renders_with_sample_values_and_escapes_html(
    settings: Settings, tmp_path: Path
) -> None:
    text = render_staff_text(settings, "Hi {{ first_name }} {{ postal_address }}", field="body")
    assert text == f"Hi Sample {settings.postal_address}"
    html = render_staff_text(
        settings, "<p>{{ first_name }}</p>", field="body", html=True, values={"first_name": "<b>"}
    )
    assert html == "<p>&lt;b&gt;</p>"
    marker = tmp_path / "ran"
    with pytest.raises(TemplateProblem):
        render_staff_text(settings, escapes(marker)[0], field="subject", subject=True)
    with pytest.raises(TemplateProblem, match="refused by the sandbox|__class__"):
        render_staff_text(settings, "{{ first_name|attr('__cl' ~ 'ass__') }}", field="body")
    assert not marker.exists()
