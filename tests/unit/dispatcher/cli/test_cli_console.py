"""``dispatcher staff`` and ``campaign create --body-html``: the console's CLI parity."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from dispatcher.db import session_scope
from dispatcher.models import Campaign, CampaignContent
from dispatcher.settings import Settings
from tests.unit.dispatcher.cli.test_cli_suppress import cli


def test_staff_add_prints_a_one_time_link_list_and_disable(settings: Settings) -> None:
    result = cli(settings, "staff", "add", "Ed@Staff.Example", "--role", "editor")
    assert result.exit_code == 0 and "/set-password/" in result.output
    assert cli(settings, "staff", "add", "ed@staff.example", "--role", "editor").exit_code == 1
    assert cli(settings, "staff", "add", "x@staff.example", "--role", "boss").exit_code == 2
    assert cli(settings, "staff", "list").output == "ed@staff.example\teditor\tpassword not set\n"
    assert cli(settings, "staff", "disable", "ed@staff.example").exit_code == 0
    assert "disabled" in cli(settings, "staff", "list").output


def test_campaign_create_with_a_body_of_ones_own(
    settings: Settings, session_factory, tmp_path: Path
) -> None:
    body = tmp_path / "body.html"
    body.write_text("<p>Hello {{ first_name }}</p>", encoding="utf-8")
    text = tmp_path / "body.txt"
    text.write_text("Hello {{ first_name }}", encoding="utf-8")
    result = cli(
        settings,
        "campaign",
        "create",
        "--name",
        "n",
        "--subject",
        "Hi {{ first_name }}",
        "--body-html",
        str(body),
        "--body-text",
        str(text),
        "--layout",
        "_layout",
    )
    assert result.exit_code == 0, result.output
    with session_scope(session_factory) as session:
        campaign = session.scalar(select(Campaign))
        assert campaign.content.body_text == "Hello {{ first_name }}"
        assert campaign.template == "_layout"

    evil = tmp_path / "evil.html"
    evil.write_text("{{ ''.__class__ }}", encoding="utf-8")
    result = cli(
        settings, "campaign", "create", "--name", "e", "--subject", "s", "--body-html", str(evil)
    )
    assert result.exit_code == 1 and "sandbox" in result.output
    with session_scope(session_factory) as session:
        assert len(list(session.scalars(select(CampaignContent)))) == 1
