"""One typed settings object, built once from a TOML file plus ``DISPATCHER_*`` variables."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "embedded.toml"
DEFAULT_TEMPLATES = PROJECT_ROOT / "templates"
KEY_FILE_NAME = "secret_keys"


class SettingsError(Exception):
    """Configuration that cannot work; the message names the setting."""


def default_web_threads(cores: int | None = None) -> int:
    """Request threads per web process when ``DISPATCHER_WEB_THREADS`` is not set: 8, or
    twice the cores plus one on a machine of fewer than four (``os.cpu_count()``), the most
    granian runs without warning that the threads are many for the cores. On two cores 5
    threads served the recipient pages as fast as 8 (``bench/recipient_load.py --threads``)."""
    return min(8, 2 * (cores or os.cpu_count() or 1) + 1)


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
    # The company's own web site, which templates link to (the catalogue, the terms); the
    # recipient pages live under ``base_url``, a different host.
    site_url: str = "https://www.killertracks.com"
    unsubscribe_mailto: str = "unsubscribe@killertracks.com"
    policy_version: str = "2016-01-06"
    templates_dir: Path = DEFAULT_TEMPLATES
    batch_size: int = 200
    # Batches of one campaign waiting in the broker at most; refilled as batches finish.
    # Keep it above twice the worker processes of the whole fleet, so none waits for work.
    batch_window: int = 64
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
    # Retention (days): how long page hits keep IP and browser, how long our copies of
    # affiliate export files and the record of who was shared with whom are kept.
    retention_hit_days: float = 90.0
    retention_export_days: float = 30.0
    retention_share_days: float = 730.0
    # Throttling; 0 means no limit.
    rate_per_second: float = 0.0
    domain_rate_per_second: float = 0.0
    # Signup (double opt-in) form: which extra fields it asks for (first_name, last_name, or an
    # attribute name an audience can use), the wording of each consent box, the form's name as
    # recorded in the proof, how long a confirmation link works, and the per-IP request limit.
    signup_fields: tuple[str, ...] = ("first_name",)
    signup_form: str = "subscribe-v1"
    signup_marketing_text: str = (
        "Yes, send me e-mail about new music, releases and offers from Killer Tracks."
    )
    signup_affiliates_text: str = (
        "Yes, Killer Tracks may share my name and e-mail address with its affiliated "
        "companies so that they can send me offers (only while I receive marketing)."
    )
    signup_link_seconds: float = 3 * 24 * 3600.0
    signup_ip_limit: int = 20
    signup_ip_window_seconds: float = 3600.0
    # Web: how many reverse proxies in front append to X-Forwarded-For (0: believe none),
    # and the request threads per web process (the database pool is sized to match). Few:
    # connections wait in the server's event loop, not in a thread, and more threads than
    # the cores can keep busy only contend for the interpreter (default_web_threads).
    trusted_proxies: int = 0
    web_threads: int = field(default_factory=default_web_threads)
    # Page views (GETs of the link pages) are counted in memory and written at least this
    # often (dispatcher/web/hits.py): what a crash of a web process can lose.
    web_hit_flush_seconds: float = 1.0
    # Inbound mail (dispatcher/inbound). The envelope sender of every message is
    # <local>+d<delivery>.<tag>@<domain> of this address (VERP), so a bounce names its delivery.
    return_path: str = "bounces@killertracks.com"
    # N soft bounces within D days suppress the address like a hard bounce.
    soft_bounce_limit: int = 3
    soft_bounce_days: int = 7
    # A campaign pauses itself past these rates, once this many messages have gone.
    complaint_pause_rate: float = 0.003
    bounce_pause_rate: float = 0.05
    pause_min_sent: int = 200
    # Largest message the receiver accepts; raw messages are kept up to inbound_keep_bytes.
    inbound_max_bytes: int = 32 * 1024 * 1024
    inbound_keep_bytes: int = 256 * 1024
    inbound_keep_days: int = 180
    # Mailboxes read on beat's schedule: a local maildir, an IMAP URL (imaps://user:pw@host/box).
    inbound_maildir: str = ""
    inbound_imap_url: str = field(default="", repr=False)
    # Where the IMAP reader moves each message it applied (created when missing).
    inbound_imap_done_folder: str = "Processed"
    inbound_poll_seconds: float = 60.0
    # Where an unsubscribe accepted while the database is away waits (default: home/spool).
    spool_dir: str = ""
    # DKIM: sign outgoing mail when a private key file is given.
    dkim_key_file: str = ""
    dkim_selector: str = "dispatcher"
    dkim_domain: str = ""
    # Provider webhooks: SendGrid's verification key (base64 DER), SNS topics we accept.
    sendgrid_public_key: str = ""
    sns_topic_arns: str = ""
    # Staff console: its public root (https makes its cookies Secure), the idle time after
    # which a session ends, and how long a set-password link works.
    console_url: str = "http://127.0.0.1:8026"
    console_idle_seconds: float = 1800.0
    staff_link_seconds: float = 48 * 3600.0
    # Logs: "text" (readable) or "json" (one object per line), and the lowest level written.
    log_format: str = "text"
    log_level: str = "info"
    # Where `dispatcher metrics serve` listens for Prometheus (README, "Operations").
    metrics_port: int = 9464
    # Extra Celery settings (``celery_*`` keys of the file, ``DISPATCHER_CELERY_*`` variables).
    celery: Mapping[str, Any] = field(default_factory=dict)

    @property
    def outbox(self) -> Path | None:
        if self.mail_url.startswith("maildir://"):
            return Path(self.mail_url.removeprefix("maildir://"))
        return None

    @property
    def spool(self) -> Path:
        return Path(self.spool_dir) if self.spool_dir else self.home / "spool"

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``, refused (:class:`SettingsError`) exactly where the loader
        would refuse the same values: both build through :func:`_validate`."""
        return dataclasses.replace(self, **changes)


_INT_FIELDS = {
    "batch_size",
    "batch_window",
    "stats_min_cell",
    "signup_ip_limit",
    "trusted_proxies",
    "web_threads",
    "soft_bounce_limit",
    "soft_bounce_days",
    "pause_min_sent",
    "inbound_max_bytes",
    "inbound_keep_bytes",
    "inbound_keep_days",
    "metrics_port",
}


def _validate(settings: Settings) -> None:
    """The rules every Settings obeys, however it was built (the loader, or ``replace``)."""
    for name in ("database_url", "broker_url", "mail_url", "base_url"):
        if not getattr(settings, name):
            raise SettingsError(f"{name} is not set (config file or DISPATCHER_{name.upper()})")
    numbers: dict[str, Any] = {}
    for name in _RANGES:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{_var(name)} must be a number, not {value!r}")
        numbers[name] = value
    _check_ranges(numbers)
    if not settings.secret_keys:
        raise SettingsError("secret_keys is empty: give at least one signing key")
    # A typo in the mail URL fails now, not at the first batch.
    from dispatcher.sending.transports import parse_mail_url

    try:
        parse_mail_url(settings.mail_url, timeout=settings.smtp_timeout_seconds)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


_FLOAT_FIELDS = {
    "beat_interval_seconds",
    "smtp_timeout_seconds",
    "claim_lease_seconds",
    "stall_seconds",
    "affiliate_link_seconds",
    "rate_per_second",
    "domain_rate_per_second",
    "retention_hit_days",
    "retention_export_days",
    "retention_share_days",
    "signup_link_seconds",
    "signup_ip_window_seconds",
    "complaint_pause_rate",
    "bounce_pause_rate",
    "inbound_poll_seconds",
    "console_idle_seconds",
    "staff_link_seconds",
    "web_hit_flush_seconds",
}
_PATH_FIELDS = {"templates_dir"}
_LIST_FIELDS = {"signup_fields"}
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Names the signup form uses itself (the honeypot is "comment").
_RESERVED_FIELDS = {"email", "marketing", "affiliates", "csrf", "comment"}
# Allowed range of each number: (lowest, highest, whether the lowest itself is allowed).
_RANGES: dict[str, tuple[float, float, bool]] = {
    "batch_size": (1, 100_000, True),
    "batch_window": (1, 100_000, True),
    "stats_min_cell": (1, 1_000, True),
    "beat_interval_seconds": (0, 3_600, False),
    "smtp_timeout_seconds": (0, 3_600, False),
    "claim_lease_seconds": (0, 86_400, False),
    "stall_seconds": (1, 7 * 86_400, True),
    "affiliate_link_seconds": (60, 366 * 86_400, True),
    "rate_per_second": (0, 1_000_000, True),
    "domain_rate_per_second": (0, 1_000_000, True),
    "retention_hit_days": (0, 36_500, False),
    "retention_export_days": (0, 36_500, False),
    "retention_share_days": (0, 36_500, False),
    "signup_link_seconds": (60, 90 * 86_400, True),
    "signup_ip_limit": (0, 1_000_000, True),
    "signup_ip_window_seconds": (1, 7 * 86_400, True),
    "trusted_proxies": (0, 10, True),
    "web_threads": (1, 256, True),
    "web_hit_flush_seconds": (0, 3_600, False),
    "soft_bounce_limit": (1, 1_000, True),
    "soft_bounce_days": (1, 3_650, True),
    "pause_min_sent": (0, 100_000_000, True),
    "complaint_pause_rate": (0, 1, False),
    "bounce_pause_rate": (0, 1, False),
    "inbound_max_bytes": (1_024, 1 << 31, True),
    "inbound_keep_bytes": (0, 1 << 31, True),
    "inbound_keep_days": (1, 36_500, True),
    "inbound_poll_seconds": (1, 86_400, True),
    "console_idle_seconds": (60, 7 * 86_400, True),
    "staff_link_seconds": (60, 30 * 86_400, True),
    "metrics_port": (1, 65_535, True),
}
_CHOICES = {
    "log_format": ("text", "json"),
    "log_level": ("debug", "info", "warning", "error"),
}
MIN_KEY_LENGTH = 16
_DATABASE_DRIVERS = {"sqlite", "sqlite+pysqlite", "postgresql+psycopg"}
_BROKER_SCHEMES = {"amqp", "amqps", "pyamqp", "redis", "rediss", "sqla", "sqlalchemy", "memory"}
_DATABASE_HINT = "use sqlite:///path/to/dispatcher.db or postgresql+psycopg://user@host/dbname"
_BROKER_HINT = (
    "use amqp://user:password@host:5672//, redis://host:6379/0 or sqla+sqlite:///path/broker.db"
)


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
            raise SettingsError(
                f"{_var(name)} is not set: give it in the config file or the environment"
            )
        values[name] = str(values[name]).replace("{home}", str(home))
    values["base_url"] = values["base_url"].rstrip("/")
    if "site_url" in values:
        values["site_url"] = str(values["site_url"]).rstrip("/")
    for name in _INT_FIELDS & values.keys():
        values[name] = _number(name, values[name], int)
    for name in _FLOAT_FIELDS & values.keys():
        values[name] = _number(name, values[name], float)
    for name in _PATH_FIELDS & values.keys():
        values[name] = Path(values[name])
    for name in _LIST_FIELDS & values.keys():
        values[name] = _parse_list(values[name])
    for name in values.get("signup_fields", ()):
        if not _FIELD_NAME.fullmatch(name) or name in _RESERVED_FIELDS:
            raise SettingsError(
                f"signup_fields: {name!r} cannot be a form field (lower-case letters, digits "
                f"and _, at most 40; not {', '.join(sorted(_RESERVED_FIELDS))})"
            )
    _check_writable("home", home)
    _check_values(values)

    dkim_key = values.get("dkim_key_file")
    if dkim_key and not os.access(dkim_key, os.R_OK):
        raise SettingsError(f"dkim_key_file: cannot read {dkim_key}")

    keys = _parse_keys(values.pop("secret_keys", None))
    if not keys:
        if not embedded:
            raise SettingsError(
                "DISPATCHER_SECRET_KEYS is not set: give at least one signing key "
                "(comma-separated, newest first). Only the embedded demo generates one."
            )
        keys = _embedded_keys(home)
    _check_keys(keys)
    return Settings(home=home, embedded=embedded, secret_keys=keys, celery=celery, **values)


def _var(name: str) -> str:
    return f"DISPATCHER_{name.upper()}"


def _number(name: str, value: Any, kind: type[int] | type[float]) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{_var(name)} must be {what}, not {value!r}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{_var(name)} must be a finite number, not {value!r}")
    return number


def _guess(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    if value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return value


def _parse_list(value: Any) -> tuple[str, ...]:
    """A list from TOML, or comma-separated text from the environment."""
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(str(k).strip() for k in items if str(k).strip())


def _parse_keys(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(k.strip() for k in items if str(k).strip())


def _embedded_keys(home: Path) -> tuple[str, ...]:
    """The demo's signing key: made once under ``home`` with mode 0600, then reused."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / KEY_FILE_NAME
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return _parse_keys(path.read_text(encoding="utf-8").replace("\n", ","))


def _check_ranges(values: Mapping[str, Any]) -> None:
    for name, (low, high, low_ok) in _RANGES.items():
        if name not in values:
            continue
        number = values[name]
        if number < low or (number == low and not low_ok) or number > high:
            bound = f"at least {low:g}" if low_ok else f"more than {low:g}"
            raise SettingsError(
                f"{_var(name)} must be {bound} and at most {high:g} (got {number:g})"
            )


def _check_values(values: dict[str, Any]) -> None:
    """Each setting checked by its kind (numbers, URLs, paths, addresses): the first one that
    cannot work raises :class:`SettingsError` naming it and the fix."""
    _check_ranges(values)
    for name, choices in _CHOICES.items():
        if name in values:
            values[name] = str(values[name]).lower()
            if values[name] not in choices:
                raise SettingsError(f"{_var(name)} must be one of {', '.join(choices)}")
    _check_database_url(values["database_url"])
    _check_broker_url(values["broker_url"])
    _check_base_url(values["base_url"])
    if "console_url" in values:
        _check_base_url(str(values["console_url"]), "console_url", "the staff console")
    # A typo in the mail URL fails now, not at the first batch.
    from dispatcher.sending.transports import parse_mail_url

    try:
        target = parse_mail_url(
            values["mail_url"], timeout=float(values.get("smtp_timeout_seconds", 30))
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if isinstance(target, Path):
        _check_writable("mail_url", target)
    if "templates_dir" in values and not (values["templates_dir"] / "email").is_dir():
        raise SettingsError(
            f"DISPATCHER_TEMPLATES_DIR: {values['templates_dir']} holds no email/ folder: "
            "point it at the folder holding email/ and web/"
        )
    if values.get("stage_timings"):
        _check_writable("stage_timings", Path(values["stage_timings"]).parent)
    for name in ("sender", "unsubscribe_mailto"):
        if name in values:
            _check_address(name, str(values[name]))
    for name in ("postal_address", "company_name"):
        if name in values and not str(values[name]).strip():
            raise SettingsError(f"{_var(name)} is empty: every message must carry it")


def _check_database_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError(
            f"DISPATCHER_DATABASE_URL is not a database URL: {_DATABASE_HINT}"
        ) from None
    if parsed.drivername not in _DATABASE_DRIVERS:
        raise SettingsError(
            f"DISPATCHER_DATABASE_URL: {parsed.drivername}:// is not supported: {_DATABASE_HINT}"
        )
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        _check_writable("database_url", Path(parsed.database).parent)


def _check_broker_url(url: str) -> None:
    # Celery takes several brokers separated by ";" (failover); each must work.
    for part in url.split(";"):
        scheme = part.split("://", 1)[0].lower() if "://" in part else ""
        transport = scheme.split("+", 1)[0]
        if transport not in _BROKER_SCHEMES:
            shown = f"{scheme}://" if scheme else repr(part.split("/", 1)[0][:20])
            raise SettingsError(f"DISPATCHER_BROKER_URL: {shown} is not supported: {_BROKER_HINT}")
        if transport in ("sqla", "sqlalchemy"):
            if "+" not in scheme:
                raise SettingsError(
                    f"DISPATCHER_BROKER_URL: {scheme}:// needs a database URL after it: "
                    f"{_BROKER_HINT}"
                )
            continue
        if transport != "memory":
            try:
                host = urlsplit(part).hostname
                urlsplit(part).port  # noqa: B018 - raises on a bad port
            except ValueError as exc:
                raise SettingsError(f"DISPATCHER_BROKER_URL: bad port ({exc})") from None
            if not host:
                raise SettingsError(
                    f"DISPATCHER_BROKER_URL: {scheme}:// names no host: {_BROKER_HINT}"
                )


def _check_base_url(url: str, name: str = "base_url", what: str = "the recipient pages") -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"{_var(name)} must be the public http(s) root of {what}, like https://mail.example.com"
        )
    if parts.query or parts.fragment:
        raise SettingsError(f"{_var(name)} takes no ?query or #fragment: give the root only")


def _check_address(name: str, value: str) -> None:
    from email.utils import parseaddr

    _, address = parseaddr(value)
    if any(ch in value for ch in "\r\n\0") or "@" not in address:
        raise SettingsError(
            f"{_var(name)} must be an e-mail address (optionally with a name: "
            "Killer Tracks <info@killertracks.com>)"
        )


def _check_writable(name: str, path: Path) -> None:
    """``path`` is a writable folder, or can be created as one."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" (it would be created in {probe})"
        raise SettingsError(
            f"{_var(name)}: {path} is not a writable folder{where}: "
            "choose a folder this user can write to"
        )


def _check_keys(keys: tuple[str, ...]) -> None:
    short = [i for i, key in enumerate(keys, 1) if len(key) < MIN_KEY_LENGTH]
    if short:
        which = (
            f"key {short[0]} is" if len(short) == 1 else f"keys {', '.join(map(str, short))} are"
        )
        raise SettingsError(
            f"DISPATCHER_SECRET_KEYS: {which} shorter than "
            f"{MIN_KEY_LENGTH} characters (of {len(keys)}): make each key long and random, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
