"""``campaign schedule`` warns about links to our own host that answer 404 there."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from dispatcher.campaigns.links import dead_own_links
from dispatcher.campaigns.services import campaign_view, create_campaign
from dispatcher.settings import Settings
from tests.unit.dispatcher.campaigns.test_campaigns import cli


def with_link(settings: Settings, tmp_path: Path, href: str) -> Settings:
    root = tmp_path / "templates"
    shutil.copytree(settings.templates_dir, root)
    body = root / "email" / "new-releases" / "body.html"
    body.write_text(body.read_text().replace("{{ site_url }}/new", href))
    return settings.replace(templates_dir=root)


def test_a_link_to_our_own_host_that_answers_404_is_named(
    settings: Settings, session: Session, tmp_path: Path
) -> None:
    local = with_link(settings, tmp_path, "{{ base_url }}/new")
    campaign = create_campaign(session, local, name="x", subject="s", template="new-releases")
    assert dead_own_links(local, campaign_view(campaign)) == [f"{local.base_url}/new"]


def test_the_shipped_templates_have_no_dead_link_of_ours(
    settings: Settings, session: Session
) -> None:
    for template, purpose in (("new-releases", "marketing"), ("terms-update", "service_notice")):
        campaign = create_campaign(
            session, settings, name="x", subject="s", template=template, purpose=purpose
        )
        assert dead_own_links(settings, campaign_view(campaign)) == []


def test_our_pages_and_stylesheet_are_not_dead(
    settings: Settings, session: Session, tmp_path: Path
) -> None:
    local = with_link(settings, tmp_path, "{{ base_url }}/static/site.css")
    campaign = create_campaign(session, local, name="x", subject="s", template="new-releases")
    assert dead_own_links(local, campaign_view(campaign)) == []
    gone = with_link(settings, tmp_path / "b", "{{ base_url }}/static/nothing.css")
    assert dead_own_links(gone, campaign_view(campaign)) == [f"{local.base_url}/static/nothing.css"]


def test_campaign_schedule_prints_the_warning_and_still_schedules(
    settings: Settings, tmp_path: Path
) -> None:
    root = with_link(settings, tmp_path, "{{ base_url }}/new").templates_dir
    local = settings.replace(templates_dir=root)
    args = ["campaign", "create", "--name", "x", "--subject", "s", "--template", "new-releases"]
    env_templates = {"DISPATCHER_TEMPLATES_DIR": str(root)}
    code, out = cli(local, *args, env=env_templates)
    assert code == 0, out
    code, out = cli(local, "campaign", "schedule", "1", env=env_templates)
    assert code == 0 and "campaign 1 scheduled" in out
    assert f"warning: {local.base_url}/new is on our own host" in out
