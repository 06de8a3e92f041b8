"""Staff accounts: roles, Argon2id passwords set through a one-time link, sign-in with lock-out.

The CLI (``dispatcher staff …``) and the console's pages call these; nothing else writes the
``staff`` table.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.console.staff_sessions import end_sessions_of
from dispatcher.models import Staff, StaffRole
from dispatcher.settings import Settings
from suppression.address import InvalidAddress, canonical_address
from suppression.events import Hit, record_event
from suppression.models import Event, utcnow
from suppression.tokens import BadToken, LinkPurpose, TokenOutcome, TokenSigner

# The sixth wrong password in a row locks the account for LOCK_FOR.
MAX_FAILED = 6
LOCK_FOR = timedelta(minutes=15)
# Failed sign-ins from one IP within IP_WINDOW beyond which that IP is refused for a while.
IP_FAILURES = 20
IP_WINDOW = timedelta(minutes=15)
MIN_PASSWORD = 12
ROLE_ORDER = {StaffRole.VIEWER: 0, StaffRole.EDITOR: 1, StaffRole.ADMIN: 2}

_hasher = PasswordHasher()
# Verified against when the address is unknown, so that case takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class StaffError(ValueError):
    """A staff-account request that cannot be carried out; the message says why."""


class SignInRefused(Exception):
    """A refused sign-in: ``outcome`` for the audit log, the message for the page."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def has_role(role: str, needed: StaffRole) -> bool:
    return ROLE_ORDER.get(StaffRole(role), -1) >= ROLE_ORDER[needed]


def _email(text: str) -> str:
    try:
        return canonical_address(text)
    except InvalidAddress as exc:
        raise StaffError(f"{text!r} is not a usable e-mail address: {exc}") from None


def _role(text: str) -> StaffRole:
    try:
        return StaffRole(text)
    except ValueError:
        names = ", ".join(r.value for r in StaffRole)
        raise StaffError(f"unknown role {text!r}: use one of {names}") from None


def get_staff(session: Session, email: str) -> Staff:
    staff = session.scalar(select(Staff).where(Staff.email == _email(email)))
    if staff is None:
        raise StaffError(f"no staff member {email!r}")
    return staff


def password_link(settings: Settings, staff: Staff) -> str:
    """A new one-time set-password link for ``staff``; any earlier link stops working."""
    staff.password_nonce = secrets.token_urlsafe(16)
    token = TokenSigner(settings.secret_keys).sign_timed(
        LinkPurpose.STAFF_PASSWORD, {"staff": staff.id, "nonce": staff.password_nonce}
    )
    return f"{settings.console_url.rstrip('/')}/set-password/{token}"


def add_staff(
    session: Session, settings: Settings, email: str, role: str, *, actor: str | None
) -> tuple[Staff, str]:
    """A new staff account without a password, and its set-password link."""
    address, checked = _email(email), _role(role)
    if session.scalar(select(Staff.id).where(Staff.email == address)) is not None:
        raise StaffError(f"{email!r} already has an account (staff link {email} for a new link)")
    staff = Staff(email=address, role=checked.value, created_by=actor, failed_attempts=0)
    session.add(staff)
    session.flush()
    link = password_link(settings, staff)
    record_event(session, "staff_added", actor=actor, staff_id=staff.id, role=checked.value)
    return staff, link


def new_link(session: Session, settings: Settings, email: str, *, actor: str | None) -> str:
    staff = get_staff(session, email)
    if staff.disabled_at is not None:
        raise StaffError(f"{email!r} is disabled")
    link = password_link(settings, staff)
    record_event(session, "staff_link_issued", actor=actor, staff_id=staff.id)
    return link


def disable_staff(session: Session, email: str, *, actor: str | None) -> None:
    staff = get_staff(session, email)
    if staff.disabled_at is not None:
        raise StaffError(f"{email!r} is already disabled")
    staff.disabled_at = utcnow()
    staff.password_nonce = None
    ended = end_sessions_of(session, staff.id, reason="staff_disabled", by=actor)
    record_event(session, "staff_disabled", actor=actor, staff_id=staff.id, sessions_ended=ended)


def list_staff(session: Session) -> list[Staff]:
    return list(session.scalars(select(Staff).order_by(Staff.email)))


def read_password_link(session: Session, settings: Settings, token: str) -> Staff:
    """The staff member a set-password link is for; BadToken when used, replaced or expired."""
    payload = TokenSigner(settings.secret_keys).read_timed(
        LinkPurpose.STAFF_PASSWORD, token, int(settings.staff_link_seconds)
    )
    staff = (
        session.get(Staff, payload.get("staff")) if isinstance(payload.get("staff"), int) else None
    )
    nonce = payload.get("nonce")
    if (
        staff is None
        or staff.disabled_at is not None
        or not isinstance(nonce, str)
        or staff.password_nonce is None
        or not secrets.compare_digest(nonce, staff.password_nonce)
    ):
        raise BadToken(TokenOutcome.UNKNOWN_SUBJECT, "this link has been used or replaced")
    return staff


def _new_password(staff: Staff, password: str, confirm: str) -> str:
    if password != confirm:
        raise StaffError("the two passwords differ")
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"the password needs at least {MIN_PASSWORD} characters")
    if password.strip().lower() == staff.email:
        raise StaffError("the password cannot be your e-mail address")
    return _hasher.hash(password)


def set_password(session: Session, staff: Staff, password: str, confirm: str, hit: Hit) -> None:
    """Set the password through a link (the link's nonce is spent); every session of the
    account ends (whoever had it signed in must sign in with the new password)."""
    staff.password_hash = _new_password(staff, password, confirm)
    staff.password_nonce = None
    staff.failed_attempts = 0
    staff.locked_until = None
    ended = end_sessions_of(session, staff.id, reason="password_changed", by=staff.email)
    record_event(
        session,
        "staff_password_set",
        actor=staff.email,
        hit=hit,
        outcome="ok",
        staff_id=staff.id,
        sessions_ended=ended,
    )


def change_password(
    session: Session,
    staff: Staff,
    current: str,
    password: str,
    confirm: str,
    hit: Hit,
    *,
    keep_session: int | None,
) -> int:
    """A signed-in staff member changes their password: the current one is asked again, and
    every other session of the account ends. Returns how many ended."""
    if staff.password_hash is None or not _verify(staff.password_hash, current):
        raise StaffError("the current password is not right")
    staff.password_hash = _new_password(staff, password, confirm)
    ended = end_sessions_of(
        session, staff.id, reason="password_changed", by=staff.email, keep=keep_session
    )
    record_event(
        session,
        "staff_password_changed",
        actor=staff.email,
        hit=hit,
        outcome="ok",
        sessions_ended=ended,
    )
    return ended


def ip_failures(session: Session, ip: str | None, now: datetime) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.kind == "staff_sign_in",
                Event.occurred_at >= now - IP_WINDOW,
                Event.ip == ip,
                Event.outcome != "ok",
            )
        )
        or 0
    )


def sign_in(session: Session, email: str, password: str, hit: Hit) -> Staff:
    """The staff member whose password this is, or SignInRefused (recorded either way).

    The caller commits the session whatever the outcome, so the failure counter and the
    audit record stay.
    """
    now = utcnow()

    def refuse(outcome: str, message: str, staff: Staff | None = None) -> SignInRefused:
        record_event(
            session,
            "staff_sign_in",
            actor=staff.email if staff else None,
            hit=hit,
            outcome=outcome,
        )
        return SignInRefused(outcome, message)

    if ip_failures(session, hit.ip, now) >= IP_FAILURES:
        raise refuse("throttled", "Too many failed sign-ins from your network; try again later.")
    try:
        address = canonical_address(email)
    except InvalidAddress:
        address = None
    staff = (
        session.scalar(select(Staff).where(Staff.email == address).with_for_update())
        if address
        else None
    )
    wrong = "Wrong e-mail address or password."
    if staff is None or staff.password_hash is None or staff.disabled_at is not None:
        _verify(_DUMMY_HASH, password)
        outcome = "unknown" if staff is None else "disabled" if staff.disabled_at else "no_password"
        raise refuse(outcome, wrong, staff)
    if staff.locked_until is not None and staff.locked_until > now:
        raise refuse(
            "locked",
            "This account is locked after repeated wrong passwords until "
            f"{staff.locked_until:%H:%M} UTC.",
            staff,
        )
    if not _verify(staff.password_hash, password):
        staff.failed_attempts = (staff.failed_attempts or 0) + 1
        if staff.failed_attempts >= MAX_FAILED:
            staff.locked_until = now + LOCK_FOR
            staff.failed_attempts = 0
            raise refuse(
                "locked_now",
                "Too many wrong passwords: this account is locked for "
                f"{int(LOCK_FOR.total_seconds() // 60)} minutes.",
                staff,
            )
        raise refuse("wrong_password", wrong, staff)
    if _hasher.check_needs_rehash(staff.password_hash):
        staff.password_hash = _hasher.hash(password)
    staff.failed_attempts = 0
    staff.locked_until = None
    staff.last_sign_in_at = now
    record_event(session, "staff_sign_in", actor=staff.email, hit=hit, outcome="ok")
    return staff


def _verify(hashed: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(hashed, password))
    except (VerificationError, InvalidHashError):
        return False
