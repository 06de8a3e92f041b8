"""Campaign commands: bad input gets a clear error and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.services import CampaignError, create_campaign, schedule_campaign
from dispatcher.db import session_scope
from dispatcher.models import Campaign
from dispatcher.settings import Settings
from tests.factories import make_contact
from workers.cli import main


def cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    env = {
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
        **(env or {}),
    }
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def campaigns(session_factory: sessionmaker[Session]) -> int:
    with session_scope(session_factory) as session:
        return int(session.scalar(select(func.count()).select_from(Campaign)) or 0)


def test_create_schedule_list_status_through_the_cli(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    code, out = cli(
        settings,
        "campaign",
        "create",
        "--name",
        "Spring",
        "--subject",
        "{{ greeting_name }}, new tracks",
        "--template",
        "new-releases",
    )
    assert code == 0 and "campaign 1 created" in out
    assert cli(settings, "campaign", "schedule", "1")[0] == 0
    code, out = cli(settings, "campaign", "list")
    assert "scheduled" in out and "Spring" in out
    code, out = cli(settings, "campaign", "status", "1", "--json")
    report = json.loads(out)
    assert report["status"] == "scheduled" and report["total"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--template", "no-such-template"], "no template named 'no-such-template'"),
        (["--template", "terms-update"], "is for service_notice mail"),
        (["--subject", "hi\r\nBcc: x@example.com"], "line break"),
        (["--subject", "{{ fist_name }}"], "'fist_name' is undefined"),
        (["--audience", "genre"], "not understood"),
        (["--purpose", "spam"], "Invalid value"),
    ],
)
def test_bad_campaigns_are_refused_and_nothing_is_created(
    settings: Settings, session_factory: sessionmaker[Session], args: list[str], message: str
) -> None:
    base = {"--name": "x", "--subject": "hello", "--template": "new-releases"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    code, out = cli(
        settings, "campaign", "create", *[item for pair in base.items() for item in pair]
    )
    assert code != 0
    assert message in out
    assert campaigns(session_factory) == 0


@pytest.mark.parametrize("command", ["schedule", "cancel", "pause", "resume", "status"])
def test_unknown_campaign_id_is_named(settings: Settings, command: str) -> None:
    code, out = cli(settings, "campaign", command, "4242")
    assert code == 1 and "no campaign with id 4242" in out


def test_template_without_unsubscribe_link_cannot_be_scheduled(
    settings: Settings, session: Session, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    folder = templates / "email" / "bare"
    folder.mkdir(parents=True)
    (folder / "template.toml").write_text('purpose = "marketing"\n')
    (folder / "body.html").write_text("<p>Buy now, {{ greeting_name }}! {{ postal_address }}</p>")
    (folder / "body.txt").write_text("Buy now! {{ postal_address }}")
    local = settings.replace(templates_dir=templates)
    with pytest.raises(CampaignError, match="lacks the unsubscribe link"):
        create_campaign(session, local, name="x", subject="s", template="bare")


def test_template_edited_after_creation_is_checked_again_at_scheduling(
    settings: Settings, session: Session, tmp_path: Path
) -> None:
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree(settings.templates_dir, templates)
    local = settings.replace(templates_dir=templates)
    campaign = create_campaign(session, local, name="x", subject="s", template="new-releases")
    body = templates / "email" / "new-releases" / "body.html"
    body.write_text(body.read_text().replace("{% endblock %}", "{{ discount_code }}{% endblock %}"))
    with pytest.raises(CampaignError, match="discount_code"):
        schedule_campaign(session, local, campaign.id)
    assert campaign.status == "draft"


def test_only_a_draft_can_be_scheduled(settings: Settings, session: Session) -> None:
    make_contact(session, "a@example.com")
    campaign = create_campaign(session, settings, name="x", subject="s", template="new-releases")
    schedule_campaign(session, settings, campaign.id)
    with pytest.raises(CampaignError, match="campaign 1 is scheduled; it cannot become scheduled"):
        schedule_campaign(session, settings, campaign.id)


def test_preview_renders_one_message_and_sends_nothing(settings: Settings, session_factory) -> None:
    with session_scope(session_factory) as session:
        make_contact(session, "ann@example.com", first_name="Ann")
    cli(
        settings,
        "campaign",
        "create",
        "--name",
        "P",
        "--subject",
        "{{ greeting_name }}, hi",
        "--template",
        "new-releases",
    )
    code, out = cli(settings, "campaign", "preview", "1", "--to", "ANN@example.com")
    assert code == 0
    assert "Subject: Ann, hi" in out and "List-Unsubscribe-Post" in out
    assert not (settings.home / "outbox").exists()
    code, out = cli(settings, "campaign", "preview", "1", "--to", "not an address")
    assert code == 1 and "not an address" in out


def test_status_says_when_recipients_are_still_being_added(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """The fan-out stopped after its first range (its worker died there): staff see that
    the campaign's recipients are not all in yet, until a fan-out adds the rest."""
    from dispatcher.campaigns.fanout import fan_out

    with session_scope(session_factory) as session:
        for n in range(12):
            make_contact(session, f"fan{n}@example.com")
        campaign_id = create_campaign(
            session, settings, name="Big", subject="s", template="new-releases"
        ).id
        schedule_campaign(session, settings, campaign_id)
    started = fan_out(session_factory, campaign_id, 5, window=2)
    next(started)
    started.close()
    code, out = cli(settings, "campaign", "status", str(campaign_id))
    assert code == 0 and "recipients are still being added" in out
    report = json.loads(cli(settings, "campaign", "status", str(campaign_id), "--json")[1])
    assert report["adding_recipients"] is True and report["total"] == 5
    list(fan_out(session_factory, campaign_id, 5, window=2))  # the retry goes on
    report = json.loads(cli(settings, "campaign", "status", str(campaign_id), "--json")[1])
    assert report["adding_recipients"] is False and report["total"] == 12
    assert "still being added" not in cli(settings, "campaign", "status", str(campaign_id))[1]
