"""``dispatcher affiliates``: add, list, export, feed, disable through the command line."""

from __future__ import annotations

import csv

from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.models import Affiliate
from dispatcher.settings import Settings
from tests.unit.dispatcher.sharing.test_affiliates import shareable
from workers.cli import main


def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
        "DISPATCHER_BASE_URL": settings.base_url,
    }
    result = CliRunner().invoke(main, ["affiliates", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_affiliate_lifecycle_through_the_cli(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        shareable(session, "ann@example.com")
    code, out, _ = cli(
        settings, "add", "label-one", "--contact", "a@one.example", "--fields", "email,genre"
    )
    assert code == 0 and "label-one." in out
    code, _, err = cli(settings, "add", "label-one", "--contact", "a@one.example", "--fields", "x")
    assert code != 0 and "exists already" in err
    code, _, err = cli(settings, "add", "two", "--contact", "a@two.example", "--fields", "id")
    assert code != 0 and "ids are never shared" in err
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Affiliate)) == 1

    code, out, _ = cli(settings, "list")
    assert "label-one" in out and "enabled" in out and "email,genre" in out and "never" in out

    code, out, err = cli(settings, "export", "label-one", "--actor", "staff")
    assert code == 0, err
    assert "1 contacts written" in out
    assert f"{settings.base_url}/affiliates/download/" in out
    path = out.split("written to ", 1)[1].split("\n", 1)[0]
    with open(path, newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [["email", "genre"], ["ann@example.com", ""]]

    code, out, err = cli(settings, "feed", "label-one")
    assert code == 0 and out == "" and "0 addresses to purge, since export" in err
    code, _, err = cli(settings, "feed", "label-one", "--since", "2025-01-01")
    assert code != 0

    assert cli(settings, "disable", "label-one")[0] == 0
    code, _, err = cli(settings, "export", "label-one")
    assert code != 0 and "disabled" in err
    code, _, err = cli(settings, "export", "nobody")
    assert code != 0 and "no affiliate named 'nobody'" in err
