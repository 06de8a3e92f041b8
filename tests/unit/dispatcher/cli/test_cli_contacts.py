"""``dispatcher contacts import`` through click, as staff run it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.cli import main
from dispatcher.db import session_scope
from dispatcher.models import Contact
from dispatcher.settings import Settings
from suppression.models import Address, Consent

HEADER = (
    "email,first_name,last_name,marketing_consent,affiliates_consent,consent_source,consent_at\n"
)


def cli(settings: Settings, *args: str) -> Result:
    env = {
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def count(factory: sessionmaker[Session], model: type) -> int:
    with session_scope(factory) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_import_prints_a_summary_and_exits_zero_when_every_row_is_valid(
    tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    path = tmp_path / "list.csv"
    path.write_text(HEADER + "a@example.com,A,,yes,,form,2015-01-01\nb@example.com,B,,no,,,\n")
    result = cli(settings, "contacts", "import", str(path), "--actor", "alice")
    assert result.exit_code == 0, result.output
    assert "created        2" in result.stdout and "invalid        0" in result.stdout
    with session_scope(session_factory) as session:
        actors = set(session.scalars(select(Consent.actor)))
        sources = set(session.scalars(select(Consent.source)))
    assert actors == {"alice"}
    # a row without consent_source takes --source's default, the file name
    assert sources == {"form", "import:list.csv"}

    again = cli(settings, "contacts", "import", str(path), "--actor", "alice")
    assert again.exit_code == 0 and "unchanged      2" in again.stdout
    assert count(session_factory, Consent) == 2


def test_invalid_rows_are_listed_by_line_and_exit_code_is_one(
    tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        HEADER + "ok@example.com,,,yes,,,\nnope@,,,yes,,,\nx@example.com,,,sometimes,,,\n"
    )
    result = cli(settings, "contacts", "import", str(path), "--source", "fair-2016")
    assert result.exit_code == 1
    assert "line 3: email: " in result.stderr
    assert "line 4: marketing_consent: 'sometimes' is not a consent value" in result.stderr
    assert count(session_factory, Contact) == 1
    with session_scope(session_factory) as session:
        assert session.scalar(select(Contact.source)) == "fair-2016"


def test_kept_opt_outs_are_reported(
    tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    first, second = tmp_path / "1.csv", tmp_path / "2.csv"
    first.write_text(HEADER + "a@example.com,,,no,,,2015-01-01\n")
    second.write_text(HEADER + "a@example.com,,,yes,,,2016-01-01\n")
    assert cli(settings, "contacts", "import", str(first)).exit_code == 0
    result = cli(settings, "contacts", "import", str(second))
    assert result.exit_code == 0
    assert "1 opt-outs kept" in result.stdout


def test_a_file_level_problem_is_an_error_that_imports_nothing(
    tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    path = tmp_path / "nomail.csv"
    path.write_bytes(b"name,first_name\na@example.com,Jo\n")
    result = cli(settings, "contacts", "import", str(path))
    assert result.exit_code == 1
    assert "lacks the column(s) email" in result.stderr
    assert "nothing was imported" in result.stderr
    assert count(session_factory, Address) == 0


def test_a_row_that_is_not_utf8_is_named_and_the_others_go_in(
    tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"email,first_name\na@example.com,J\xf6rg\nb@example.com,Bo\n")
    result = cli(settings, "contacts", "import", str(path))
    assert result.exit_code == 1
    assert "line 2: first_name: is not UTF-8 text" in result.stderr
    assert count(session_factory, Address) == 1


def test_help_documents_the_columns_and_the_exit_code(settings: Settings) -> None:
    result = cli(settings, "contacts", "import", "--help")
    assert result.exit_code == 0
    for word in ("marketing_consent", "consent_at", "tags", "Exit code 1"):
        assert word in result.output


def test_map_and_preset_options(
    tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    path = tmp_path / "export.csv"
    path.write_text("Mail,Vorname\na@example.com,Anna\n")
    result = cli(
        settings, "contacts", "import", str(path), "--map", "Mail=email,Vorname=first_name"
    )
    assert result.exit_code == 0, result.output
    listmonk = tmp_path / "subscribers.csv"
    listmonk.write_text(
        "uuid,email,name,attributes,status,created_at,updated_at\n"
        "u,b@example.com,Bo,{},blocklisted,2021-01-01 00:00:00 +0000 UTC,"
        "2021-02-01 00:00:00 +0000 UTC\n"
    )
    result = cli(settings, "contacts", "import", str(listmonk), "--preset", "listmonk")
    assert result.exit_code == 0, result.output
    assert "1 changed a state" in result.stdout
    assert count(session_factory, Contact) == 2
