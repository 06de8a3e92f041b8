from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dispatcher.settings import PROJECT_ROOT, SettingsError, load_settings

PRODUCTION = str(PROJECT_ROOT / "config" / "production.example.toml")


def test_embedded_defaults_live_under_home_and_make_a_private_key(tmp_path: Path) -> None:
    settings = load_settings({"DISPATCHER_HOME": str(tmp_path)})
    assert settings.embedded
    assert settings.database_url == f"sqlite:///{tmp_path}/dispatcher.db"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path}/broker.db"
    assert settings.outbox == tmp_path / "outbox"
    assert settings.sender == "Killer Tracks <info@killertracks.com>"
    assert "2110 Colorado Avenue" in settings.postal_address
    key_file = tmp_path / "secret_keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_settings({"DISPATCHER_HOME": str(tmp_path)}).secret_keys == settings.secret_keys


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "DISPATCHER_HOME": str(tmp_path),
            "DISPATCHER_DATABASE_URL": "postgresql+psycopg://db/x",
            "DISPATCHER_MAIL_URL": "smtp://u:p@relay:587?starttls=true",
            "DISPATCHER_BASE_URL": "https://mail.example.com/",
            "DISPATCHER_SECRET_KEYS": "new-key-0123456789abc, old-key-0123456789abc",
            "DISPATCHER_BATCH_SIZE": "50",
            "DISPATCHER_CELERY_WORKER_PREFETCH_MULTIPLIER": "4",
        }
    )
    assert settings.database_url == "postgresql+psycopg://db/x"
    assert settings.base_url == "https://mail.example.com"
    assert settings.secret_keys == ("new-key-0123456789abc", "old-key-0123456789abc")
    assert settings.batch_size == 50
    assert settings.celery == {"worker_prefetch_multiplier": 4}


def test_production_without_keys_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DISPATCHER_SECRET_KEYS"):
        load_settings({"DISPATCHER_HOME": str(tmp_path), "DISPATCHER_CONFIG": PRODUCTION})
    assert not (tmp_path / "secret_keys").exists()


def test_production_with_keys_starts(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "DISPATCHER_HOME": str(tmp_path),
            "DISPATCHER_CONFIG": PRODUCTION,
            "DISPATCHER_SECRET_KEYS": "k" * 32,
        }
    )
    assert not settings.embedded and settings.broker_url.startswith("amqp://")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DISPATCHER_BATCH_SIZE": "lots"}, "batch_size must be a number"),
        ({"DISPATCHER_BATCH_SIZE": "0"}, "batch_size must be more than 0"),
        ({"DISPATCHER_CONFIG": "/nonexistent.toml"}, "no such file"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings({"DISPATCHER_HOME": str(tmp_path), **env})


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'embedded = true\ndatabase_url = "sqlite://"\nbroker_url = "x"\n'
        'mail_url = "maildir:///x"\nbase_url = "http://x"\ncolour = "red"\n'
    )
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        load_settings({"DISPATCHER_HOME": str(tmp_path), "DISPATCHER_CONFIG": str(config)})


def test_a_mistyped_mail_url_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DISPATCHER_MAIL_URL has unknown scheme 'smpt'"):
        load_settings({"DISPATCHER_HOME": str(tmp_path), "DISPATCHER_MAIL_URL": "smpt://relay"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("affiliate_link_seconds", "-1", "affiliate_link_seconds must be more than 0"),
        ("claim_lease_seconds", "0", "claim_lease_seconds must be more than 0"),
        ("batch_size", "-5", "batch_size must be more than 0"),
        ("rate_per_second", "-1", "rate_per_second must not be negative"),
        ("mail_url", "smpt://relay", "unknown scheme 'smpt'"),
    ],
)
def test_replace_refuses_what_the_loader_refuses(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    """A test (or any code) building Settings by hand gets no settings the loader would not
    give: both paths go through the same validation."""
    with pytest.raises(SettingsError, match=message):
        load_settings({"DISPATCHER_HOME": str(tmp_path), f"DISPATCHER_{name.upper()}": value})
    good = load_settings({"DISPATCHER_HOME": str(tmp_path)})
    typed = {"batch_size": int, "mail_url": str}.get(name, float)(value)
    with pytest.raises(SettingsError, match=message):
        good.replace(**{name: typed})
    assert good.replace(**{name: getattr(good, name)}) == good


def test_replace_refuses_a_setting_of_the_wrong_type(tmp_path: Path) -> None:
    good = load_settings({"DISPATCHER_HOME": str(tmp_path)})
    with pytest.raises(SettingsError, match="batch_size must be a number, not '50'"):
        good.replace(batch_size="50")
    with pytest.raises(SettingsError, match="secret_keys is empty"):
        good.replace(secret_keys=())
