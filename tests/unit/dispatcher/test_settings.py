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
        # numbers: a number, and in range
        ({"DISPATCHER_BATCH_SIZE": "lots"}, "DISPATCHER_BATCH_SIZE must be a whole number"),
        ({"DISPATCHER_BATCH_SIZE": "0"}, "DISPATCHER_BATCH_SIZE must be at least 1"),
        ({"DISPATCHER_BEAT_INTERVAL_SECONDS": "0"}, "BEAT_INTERVAL_SECONDS must be more than 0"),
        ({"DISPATCHER_SMTP_TIMEOUT_SECONDS": "nan"}, "must be a finite number"),
        ({"DISPATCHER_RATE_PER_SECOND": "-1"}, "DISPATCHER_RATE_PER_SECOND must be at least 0"),
        ({"DISPATCHER_STATS_MIN_CELL": "0"}, "DISPATCHER_STATS_MIN_CELL must be at least 1"),
        # URLs: by scheme
        ({"DISPATCHER_DATABASE_URL": "mysql://db/x"}, "DISPATCHER_DATABASE_URL: mysql://"),
        ({"DISPATCHER_DATABASE_URL": "not a url"}, "DISPATCHER_DATABASE_URL is not a database"),
        ({"DISPATCHER_BROKER_URL": "amqp:/mq"}, "DISPATCHER_BROKER_URL: 'amqp:' is not supp"),
        ({"DISPATCHER_BROKER_URL": "kafka://mq:9092"}, "DISPATCHER_BROKER_URL: kafka://"),
        ({"DISPATCHER_BROKER_URL": "amqp://"}, "DISPATCHER_BROKER_URL: amqp:// names no host"),
        ({"DISPATCHER_BROKER_URL": "redis://h:port/0"}, "DISPATCHER_BROKER_URL: bad port"),
        ({"DISPATCHER_BROKER_URL": "sqla://x"}, "needs a database URL after it"),
        ({"DISPATCHER_BASE_URL": "mail.example.com"}, "DISPATCHER_BASE_URL must be the public"),
        ({"DISPATCHER_BASE_URL": "https://x.com/?a=1"}, "DISPATCHER_BASE_URL takes no"),
        ({"DISPATCHER_MAIL_URL": "smtp://"}, "DISPATCHER_MAIL_URL smtp://… names no host"),
        # addresses and text every message carries
        ({"DISPATCHER_SENDER": "Killer Tracks"}, "DISPATCHER_SENDER must be an e-mail address"),
        ({"DISPATCHER_POSTAL_ADDRESS": " "}, "DISPATCHER_POSTAL_ADDRESS is empty"),
        # keys
        ({"DISPATCHER_SECRET_KEYS": "k1,k2"}, "DISPATCHER_SECRET_KEYS: keys 1, 2 are shorter"),
        (
            {"DISPATCHER_SECRET_KEYS": "long-enough-key-0001,short"},
            r"DISPATCHER_SECRET_KEYS: key 2 is shorter than 16 characters \(of 2\)",
        ),
        # the file itself
        ({"DISPATCHER_CONFIG": "/nonexistent.toml"}, "no such file"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings({"DISPATCHER_HOME": str(tmp_path), **env})
    assert "\n" not in str(caught.value)  # one line
    assert "k1" not in str(caught.value) and "short," not in str(caught.value)  # no key shown


def test_paths_must_be_writable_folders(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = {
        "DISPATCHER_HOME": (str(a_file / "var"), "DISPATCHER_HOME: .* is not a writable folder"),
        "DISPATCHER_MAIL_URL": (f"maildir://{a_file}/outbox", "DISPATCHER_MAIL_URL: .* not a"),
        "DISPATCHER_DATABASE_URL": (f"sqlite:///{a_file}/x.db", "DISPATCHER_DATABASE_URL: .*"),
        "DISPATCHER_STAGE_TIMINGS": (str(a_file / "t.jsonl"), "DISPATCHER_STAGE_TIMINGS: .*"),
        "DISPATCHER_TEMPLATES_DIR": (str(tmp_path), "DISPATCHER_TEMPLATES_DIR: .* no email/"),
    }
    for variable, (value, message) in cases.items():
        env = {"DISPATCHER_HOME": str(tmp_path / "home"), variable: value}
        with pytest.raises(SettingsError, match=message):
            load_settings(env)
    # A folder that does not exist yet but can be made is fine.
    load_settings({"DISPATCHER_HOME": str(tmp_path / "not" / "yet")})


def test_good_urls_of_every_supported_kind_pass(tmp_path: Path) -> None:
    for database, broker in [
        ("postgresql+psycopg://u@db/x", "amqp://u:p@mq:5672//"),
        (f"sqlite:///{tmp_path}/d.db", "redis://cache:6379/0;redis://cache2:6379/0"),
        ("sqlite://", f"sqla+sqlite:///{tmp_path}/b.db"),
    ]:
        settings = load_settings(
            {
                "DISPATCHER_HOME": str(tmp_path),
                "DISPATCHER_DATABASE_URL": database,
                "DISPATCHER_BROKER_URL": broker,
            }
        )
        assert settings.broker_url == broker


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


def test_signup_fields_from_the_environment_and_refused_names(tmp_path: Path) -> None:
    env = {"DISPATCHER_HOME": str(tmp_path), "DISPATCHER_SECRET_KEYS": "k" * 20}
    fields = load_settings({**env, "DISPATCHER_SIGNUP_FIELDS": "first_name, genre"})
    assert fields.signup_fields == ("first_name", "genre")
    for bad in ("Email", "email", "comment", "two words"):
        with pytest.raises(SettingsError, match="signup_fields"):
            load_settings({**env, "DISPATCHER_SIGNUP_FIELDS": bad})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("affiliate_link_seconds", "-1", "DISPATCHER_AFFILIATE_LINK_SECONDS must be at least 60"),
        ("claim_lease_seconds", "0", "DISPATCHER_CLAIM_LEASE_SECONDS must be more than 0"),
        ("batch_size", "-5", "DISPATCHER_BATCH_SIZE must be at least 1"),
        ("rate_per_second", "-1", "DISPATCHER_RATE_PER_SECOND must be at least 0"),
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
    with pytest.raises(SettingsError, match="BATCH_SIZE must be a number, not '50'"):
        good.replace(batch_size="50")
    with pytest.raises(SettingsError, match="secret_keys is empty"):
        good.replace(secret_keys=())
