"""Is this process ready, and is this deployment sound?

:func:`readiness` is what ``/readyz`` answers (database reachable, migrations at head, signing
keys loaded); :func:`install` mounts ``/healthz`` and ``/readyz`` on a Flask app (the recipient
app does; the staff console can). :func:`doctor` adds what an operator checks by hand —
broker, mail relay, file permissions, the beat and the workers — each failing check with
what is wrong and how to fix it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.settings import MIN_KEY_LENGTH, Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


def check_database(engine: Engine) -> Check:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure is "not reachable"; kind only
        return _failed(
            "database",
            f"cannot reach the database ({type(exc).__name__})",
            "check DISPATCHER_DATABASE_URL and that the database server runs and accepts us",
        )
    return Check("database", True, f"reachable ({engine.dialect.name})")


_HEADS: dict[str, tuple[str, ...]] = {}


def migration_heads(database_url: str) -> tuple[str, ...]:
    """The revisions the code expects (read once per process: the files do not change)."""
    if database_url not in _HEADS:
        from alembic.script import ScriptDirectory

        from dispatcher.db import alembic_config

        script = ScriptDirectory.from_config(alembic_config(database_url))
        _HEADS[database_url] = tuple(sorted(script.get_heads()))
    return _HEADS[database_url]


def check_migrations(engine: Engine) -> Check:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            current = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    except Exception as exc:  # noqa: BLE001
        return _failed(
            "migrations",
            f"cannot read the schema version ({type(exc).__name__})",
            "check the database first",
        )
    heads = migration_heads(str(engine.url.render_as_string(hide_password=False)))
    if current != heads:
        shown = ", ".join(current) or "none"
        return _failed(
            "migrations",
            f"the schema is at {shown}, the code expects {', '.join(heads)}",
            "run `dispatcher db upgrade`",
        )
    return Check("migrations", True, f"at head ({', '.join(heads)})")


def check_keys(settings: Settings) -> Check:
    from suppression.tokens import TokenSigner

    keys = settings.secret_keys
    if not keys or any(len(k) < MIN_KEY_LENGTH for k in keys):
        return _failed(
            "keys",
            "no usable signing key",
            f"set DISPATCHER_SECRET_KEYS: keys of at least {MIN_KEY_LENGTH} characters",
        )
    try:
        TokenSigner(keys)
    except ValueError as exc:
        return _failed("keys", f"the signing keys cannot be used: {exc}", "fix the keys")
    return Check("keys", True, f"{len(keys)} signing key(s) loaded")


def readiness(settings: Settings, engine: Engine) -> list[Check]:
    """Database reachable, migrations at head, signing keys loaded."""
    database = check_database(engine)
    checks = [database]
    if database.ok:
        checks.append(check_migrations(engine))
    checks.append(check_keys(settings))
    return checks


def install(app: Any, settings: Settings, engine: Engine) -> None:
    """``/healthz`` (the process answers) and ``/readyz`` (200 when :func:`readiness` is all
    ok, else 503) on the Flask ``app``; both JSON, neither touches a session or the audit."""
    from flask import jsonify

    def healthz() -> Any:
        return jsonify(status="ok")

    def readyz() -> Any:
        checks = readiness(settings, engine)
        ok = all(c.ok for c in checks)
        body = {
            "status": "ok" if ok else "unavailable",
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
        }
        return jsonify(body), 200 if ok else 503

    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    app.add_url_rule("/readyz", "readyz", readyz, methods=["GET"])


# --- doctor ----------------------------------------------------------------------------------


def check_broker(settings: Settings, timeout: float = 3.0) -> Check:
    from kombu import Connection

    connection = Connection(settings.broker_url, connect_timeout=timeout)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        return _failed(
            "broker",
            f"cannot reach the broker ({type(exc).__name__})",
            "check DISPATCHER_BROKER_URL and that RabbitMQ/Redis runs",
        )
    finally:
        connection.release()
    return Check("broker", True, f"answers ({settings.broker_url.split(':', 1)[0]})")


def check_mail(settings: Settings) -> Check:
    """Maildir: a writable folder. SMTP: connect, EHLO, STARTTLS and AUTH as configured, QUIT;
    nothing is sent."""
    from dispatcher.sending.transports import SendError, SMTPTransport, parse_mail_url

    target = parse_mail_url(settings.mail_url, timeout=settings.smtp_timeout_seconds)
    if isinstance(target, Path):
        probe = target
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
            return Check("mail", True, f"maildir {target} writable")
        return _failed(
            "mail", f"maildir {target} is not writable", "point DISPATCHER_MAIL_URL elsewhere"
        )
    try:
        SMTPTransport(target).check()
    except SendError as exc:
        return _failed("mail", str(exc), "fix DISPATCHER_MAIL_URL or the relay")
    steps = ["TLS" if target.implicit_tls else "EHLO"]
    if target.starttls:
        steps.append("STARTTLS")
    if target.username:
        steps.append("AUTH")
    return Check("mail", True, f"SMTP {target.host}:{target.port}: {', '.join(steps)} ok")


@dataclass(frozen=True)
class _DkimKey:
    name: str  # where the TXT record lives: <selector>._domainkey.<domain>
    record: str  # the TXT record the key implies
    public: str  # its p= value
    bits: int
    signer: Any


def _dkim_key(settings: Settings) -> _DkimKey | Check:
    """The configured DKIM key and the record it implies, or the failed ``dkim`` check."""
    import base64
    from email.utils import parseaddr

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from dispatcher.sending.dkim_signing import DkimError, DkimSigner

    fix = "point DISPATCHER_DKIM_KEY_FILE at a readable PEM RSA private key of 2048 bits"
    domain = settings.dkim_domain or parseaddr(settings.sender)[1].rpartition("@")[2]
    try:
        signer = DkimSigner(settings.dkim_key_file, settings.dkim_selector, domain)
        key = serialization.load_pem_private_key(signer.key, password=None)
    except (DkimError, ValueError, TypeError) as exc:
        return _failed("dkim", f"the DKIM key cannot be used: {exc}", fix)
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        return _failed("dkim", "the DKIM key is not an RSA key of at least 1024 bits", fix)
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    return _DkimKey(
        name=f"{settings.dkim_selector}._domainkey.{domain}",
        record=f"v=DKIM1; k=rsa; p={public}",
        public=public,
        bits=key.key_size,
        signer=signer,
    )


def check_dkim(settings: Settings) -> Check:
    """The DKIM key, when one is configured: it loads, is long enough, signs a message that
    verifies against the TXT record it implies; the detail says what to publish in DNS
    (:func:`check_dkim_dns` looks the published record up)."""
    if not settings.dkim_key_file:
        return Check("dkim", True, "not configured: outgoing mail is not DKIM-signed")
    import dkim

    key = _dkim_key(settings)
    if isinstance(key, Check):
        return key
    domain = key.name.partition("._domainkey.")[2]
    probe = (
        f"From: {settings.sender}\r\nTo: doctor@{domain}\r\nSubject: dkim check\r\n"
        "\r\nnothing is sent\r\n"
    ).encode()
    signed = key.signer.sign(probe)
    if not dkim.verify(signed, dnsfunc=lambda *_, **__: key.record.encode()):
        return _failed(
            "dkim",
            "a message signed with the key does not verify",
            "point DISPATCHER_DKIM_KEY_FILE at a readable PEM RSA private key of 2048 bits",
        )
    return Check("dkim", True, f"key of {key.bits} bits; publish TXT {key.name}: {key.record}")


def check_dkim_dns(settings: Settings, nameserver: str | None = None) -> list[Check]:
    """The DKIM record published in DNS (looked up through this machine's resolver, or
    ``nameserver`` as ``IP`` or ``IP:PORT``, e.g. the domain's own server before the record
    has spread): one record, ``v=DKIM1``, ``k=rsa``, and the public half of our key. Nothing
    when DKIM is not configured or the key itself is wrong (``check_dkim`` says so)."""
    if not settings.dkim_key_file:
        return []
    key = _dkim_key(settings)
    if isinstance(key, Check):
        return []
    import dns.exception
    import dns.resolver

    publish = f"publish TXT {key.name}: {key.record}"
    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver:
        host, port = nameserver, 53
        if nameserver.count(":") == 1:
            host, _, given = nameserver.partition(":")
            port = int(given)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = 5.0
    try:
        answer = resolver.resolve(key.name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [_failed("dkim-dns", f"no TXT record at {key.name}", publish)]
    except dns.exception.DNSException as exc:
        return [
            _failed(
                "dkim-dns",
                f"cannot look up {key.name}: {type(exc).__name__}",
                "check this machine's DNS resolver, or ask the domain's own server "
                "(dispatcher doctor --nameserver IP)",
            )
        ]
    # A long record is published as several strings of up to 255 bytes: one value.
    texts = [b"".join(rdata.strings).decode("ascii", "replace") for rdata in answer]
    records = [_dkim_tags(text) for text in texts]
    records = [tags for tags in records if "p" in tags]
    if len(records) != 1:
        found = "no DKIM record" if not records else f"{len(records)} DKIM records"
        return [_failed("dkim-dns", f"{found} among the TXT records at {key.name}", publish)]
    tags = records[0]
    if tags.get("v", "DKIM1") != "DKIM1" or tags.get("k", "rsa") != "rsa":
        wrong = f"v={tags.get('v', '')}; k={tags.get('k', '')}"
        return [_failed("dkim-dns", f"the record at {key.name} says {wrong}", publish)]
    if not tags["p"]:
        return [_failed("dkim-dns", f"the record at {key.name} is revoked (empty p=)", publish)]
    if tags["p"] != key.public:
        return [
            _failed(
                "dkim-dns",
                f"the record at {key.name} holds another public key: receivers will fail "
                "every signature (a rotated key not yet published, or the wrong selector)",
                publish,
            )
        ]
    return [Check("dkim-dns", True, f"TXT {key.name} publishes this key")]


def _dkim_tags(text: str) -> dict[str, str]:
    """RFC 6376 tag=value list; whitespace inside values (folded p=) removed."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip()] = "".join(value.split())
    return tags


def _loose(path: Path, allowed: int) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & ~allowed & 0o777)


def check_files(settings: Settings) -> Check:
    """``var/`` and what it holds are the service user's alone: folders 0700, files 0600."""
    home = settings.home
    if not home.exists():
        return Check("files", True, f"{home} not created yet")
    loose = [home] if _loose(home, 0o700) else []
    for path in sorted(home.rglob("*")):
        if path.is_symlink():
            continue
        if path.is_dir():
            if _loose(path, 0o700):
                loose.append(path)
        elif _loose(path, 0o600):
            loose.append(path)
    if loose:
        shown = ", ".join(f"{p} ({stat.S_IMODE(p.stat().st_mode):o})" for p in loose[:5])
        more = f" and {len(loose) - 5} more" if len(loose) > 5 else ""
        return _failed(
            "files",
            f"readable by other users: {shown}{more}",
            f"chmod -R go-rwx {home}  (and run the services with umask 077)",
        )
    return Check("files", True, f"{home} is private (0700/0600)")


def check_heartbeats(settings: Settings, sessions: sessionmaker[Session]) -> list[Check]:
    from dispatcher.campaigns.fleet import BEAT, WORKER, fresh, heartbeats
    from suppression.models import utcnow

    now = utcnow()
    try:
        with sessions() as session:
            beats = heartbeats(session, BEAT)
            workers = heartbeats(session, WORKER)
    except Exception as exc:  # noqa: BLE001
        failed = f"cannot read heartbeats ({type(exc).__name__})"
        return [
            _failed("beat", failed, "check the database first"),
            _failed("workers", failed, "check the database first"),
        ]
    live_beats = [b for b in beats if fresh(b.seen_at, settings, now)]
    live_workers = [w for w in workers if fresh(w.seen_at, settings, now)]
    checks = []
    if not live_beats:
        checks.append(
            _failed(
                "beat",
                "no beat heartbeat recently: nothing starts due campaigns",
                "run one `dispatcher beat` per deployment",
            )
        )
    elif live_beats[0].problem:
        checks.append(_failed("beat", live_beats[0].problem, "see the beat's log"))
    else:
        checks.append(Check("beat", True, f"seen {_ago(live_beats[0].seen_at, now)} ago"))
    if not live_workers:
        checks.append(
            _failed(
                "workers",
                "no worker heartbeat recently: nothing sends",
                "start `dispatcher worker`",
            )
        )
    else:
        checks.append(Check("workers", True, f"{len(live_workers)} worker(s) alive"))
    return checks


def _ago(seen_at: Any, now: Any) -> str:
    return f"{max(0.0, (now - seen_at).total_seconds()):.0f}s"


def check_counts(sessions: sessionmaker[Session]) -> Check:
    """The campaigns' counters against ``count(*)`` of their delivery rows (reads every
    delivery row: ``--skip counts`` on a very large database)."""
    from dispatcher.campaigns.counts import verify

    with sessions() as session:
        wrong = verify(session)
    if not wrong:
        return Check("counts", True, "campaign counters match the delivery rows")
    first = "; ".join(str(m) for m in wrong[:3])
    return _failed(
        "counts",
        f"{len(wrong)} campaign counter(s) differ from the rows: {first}",
        "report it (a statement moved delivery rows without its counters); "
        "`dispatcher campaign status ID --verify-counts --repair` recounts a campaign that "
        "is not sending",
    )


def doctor(
    settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    *,
    skip: Callable[[str], bool] = lambda _: False,
    nameserver: str | None = None,
) -> list[Check]:
    """Every check, in the order an operator would fix them."""
    checks = readiness(settings, engine)
    schema_ok = all(c.ok for c in checks if c.name in ("database", "migrations"))
    for name, run in (
        ("broker", lambda: [check_broker(settings)]),
        ("mail", lambda: [check_mail(settings)]),
        ("dkim", lambda: [check_dkim(settings)]),
        ("dns", lambda: check_dkim_dns(settings, nameserver)),
        ("files", lambda: [check_files(settings)]),
        ("heartbeats", lambda: check_heartbeats(settings, sessions) if schema_ok else []),
        ("counts", lambda: [check_counts(sessions)] if schema_ok else []),
    ):
        if not skip(name):
            checks.extend(run())
    return checks
