"""One typed settings object, built once from a TOML file plus ``DISPATCHER_*`` variables."""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "embedded.toml"
DEFAULT_TEMPLATES = PROJECT_ROOT / "templates"
KEY_FILE_NAME = "secret_keys"


class SettingsError(Exception):
    """Configuration that cannot work; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    home: Path
    embedded: bool
    database_url: str
    broker_url: str
    mail_url: str
    base_url: str
    secret_keys: tuple[str, ...] = field(repr=False)
    sender: str = "Killer Tracks <info@killertracks.com>"
    postal_address: str = "2110 Colorado Avenue, Suite 110, Santa Monica, CA 90404"
    company_name: str = "Killer Tracks"
    unsubscribe_mailto: str = "unsubscribe@killertracks.com"
    policy_version: str = "2016-01-06"
    templates_dir: Path = DEFAULT_TEMPLATES
    batch_size: int = 200
    beat_interval_seconds: float = 5.0
    smtp_timeout_seconds: float = 30.0
    # A claimed row whose sender has not renewed its claim for this long is presumed dead
    # with the row's outcome unknown; the sender renews every quarter of it.
    claim_lease_seconds: float = 120.0
    # A sending campaign with queued rows and no activity for this long has lost its tasks.
    stall_seconds: float = 600.0
    # How long an affiliate's signed download link works.
    affiliate_link_seconds: float = 7 * 24 * 3600.0
    # Benchmark only: append per-batch stage timings (JSON lines) to this file.
    stage_timings: str = ""
    # Aggregate statistics withhold any count below this.
    stats_min_cell: int = 5
    # Throttling; 0 means no limit.
    rate_per_second: float = 0.0
    domain_rate_per_second: float = 0.0
    # Staff console: its public root (https makes its cookies Secure), the idle time after
    # which a session ends, and how long a set-password link works.
    console_url: str = "http://127.0.0.1:8026"
    console_idle_seconds: float = 1800.0
    staff_link_seconds: float = 48 * 3600.0
    # Extra Celery settings (``celery_*`` keys of the file, ``DISPATCHER_CELERY_*`` variables).
    celery: Mapping[str, Any] = field(default_factory=dict)

    @property
    def outbox(self) -> Path | None:
        if self.mail_url.startswith("maildir://"):
            return Path(self.mail_url.removeprefix("maildir://"))
        return None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_INT_FIELDS = {"batch_size", "stats_min_cell"}
_FLOAT_FIELDS = {
    "beat_interval_seconds",
    "smtp_timeout_seconds",
    "claim_lease_seconds",
    "stall_seconds",
    "affiliate_link_seconds",
    "rate_per_second",
    "domain_rate_per_second",
    "console_idle_seconds",
    "staff_link_seconds",
}
_PATH_FIELDS = {"templates_dir"}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``DISPATCHER_CONFIG`` (default: the embedded file), then apply the environment."""
    env = os.environ if environ is None else environ
    config_path = Path(env.get("DISPATCHER_CONFIG") or DEFAULT_CONFIG)
    try:
        raw: dict[str, Any] = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"DISPATCHER_CONFIG: no such file {config_path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"DISPATCHER_CONFIG: {config_path} is not valid TOML: {exc}") from None

    home = Path(env.get("DISPATCHER_HOME") or raw.pop("home", None) or Path.cwd() / "var")
    home = home.resolve()
    embedded = bool(raw.pop("embedded", False))
    names = {f.name for f in dataclasses.fields(Settings)} - {"home", "embedded", "celery"}
    values: dict[str, Any] = {}
    celery: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith("celery_"):
            celery[key.removeprefix("celery_")] = value
        elif key in names:
            values[key] = value
        else:
            raise SettingsError(f"{config_path}: unknown setting {key!r}")
    for name in names:
        env_value = env.get(f"DISPATCHER_{name.upper()}")
        if env_value is not None and env_value != "":
            values[name] = env_value
    for key, value in env.items():
        if key.startswith("DISPATCHER_CELERY_") and value != "":
            celery[key.removeprefix("DISPATCHER_CELERY_").lower()] = _guess(value)

    for name in ("database_url", "broker_url", "mail_url", "base_url"):
        if not values.get(name):
            raise SettingsError(f"{name} is not set (config file or DISPATCHER_{name.upper()})")
        values[name] = str(values[name]).replace("{home}", str(home))
    values["base_url"] = values["base_url"].rstrip("/")
    for name in _INT_FIELDS & values.keys():
        values[name] = _number(name, values[name], int)
    for name in _FLOAT_FIELDS & values.keys():
        values[name] = _number(name, values[name], float)
    for name in _PATH_FIELDS & values.keys():
        values[name] = Path(values[name])
    if values.get("batch_size", 1) < 1:
        raise SettingsError("batch_size must be at least 1")

    # A typo in the mail URL fails now, not at the first batch.
    from dispatcher.sending.transports import parse_mail_url

    try:
        parse_mail_url(values["mail_url"], timeout=float(values.get("smtp_timeout_seconds", 30)))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None

    keys = _parse_keys(values.pop("secret_keys", None))
    if not keys:
        if not embedded:
            raise SettingsError(
                "DISPATCHER_SECRET_KEYS is not set: give at least one signing key "
                "(comma-separated, newest first). Only the embedded demo generates one."
            )
        keys = _embedded_keys(home)
    return Settings(home=home, embedded=embedded, secret_keys=keys, celery=celery, **values)


def _number(name: str, value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, not {value!r}") from None


def _guess(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    if value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return value


def _parse_keys(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(k.strip() for k in items if str(k).strip())


def _embedded_keys(home: Path) -> tuple[str, ...]:
    """The demo's signing key: made once under ``home`` with mode 0600, then reused."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / KEY_FILE_NAME
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return _parse_keys(path.read_text(encoding="utf-8").replace("\n", ","))
