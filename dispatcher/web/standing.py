"""What the preference pages tell a recipient about their address: the truth, from the gate.

Whether marketing mail reaches the address is asked of :mod:`suppression.gate` (the one
place that decides it), not read off the consent ledger: an address suppressed after a
complaint may still hold an opt-in there. A choice that cannot take effect (re-subscribing
while a suppression only staff may lift is active) is not offered, and the page says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import BindParameter, bindparam, select, true
from sqlalchemy.orm import Session

from dispatcher.db import PageReads, Prebuilt, rows
from suppression.gate import Purpose, blocking_reason
from suppression.models import GLOBAL_SCOPE, ConsentState, ConsentStatus, Scope, Suppression
from suppression.sql import inline_constants
from suppression.suppressions import RECIPIENT_LIFTABLE

# Why only staff can change it, in the recipient's words.
STAFF_REASONS = {
    "complaint": "a complaint about our e-mail was reported from this address (for example "
    "with a “report spam” button)",
    "hard_bounce": "e-mail to this address was returned as undeliverable",
    "repeated_soft_bounce": "e-mail to this address was returned again and again (for "
    "example because the mailbox was full)",
    "postal_request": "we received a request by post to stop writing to this address",
    "legal": "of a legal request",
    "manual": "our staff stopped e-mail to this address on request",
}

# What a saved form did, carried to the page the browser is sent to after the POST.
DONE = {
    "marketing-on": "You are subscribed again: you will receive our marketing e-mail.",
    "marketing-off": "You will receive no more marketing e-mail from us. Mail already on "
    "its way may still arrive within minutes.",
    "sharing-on": "Affiliated companies may receive your name and address.",
    "sharing-off": "We will not share your details with affiliated companies.",
    "unchanged": "Nothing changed: these were already your choices.",
}


_SHARING_SCOPES = frozenset({GLOBAL_SCOPE, str(Scope.MARKETING), str(Scope.AFFILIATES)})


@dataclass(frozen=True)
class StaffStop:
    """A suppression the recipient cannot lift here: why, and since when."""

    why: str
    since: datetime

    @property
    def since_text(self) -> str:
        return f"{self.since.day} {self.since:%B %Y}"


@dataclass(frozen=True)
class Standing:
    receives_marketing: bool
    sharing_opted_in: bool
    receives_service_notices: bool
    stopped: StaffStop | None
    sharing_suppressed: bool = False

    @property
    def can_change(self) -> bool:
        """Whether any choice on the page can take effect (re-subscribing cannot while a
        staff-only suppression is active; opting out of what one receives always can)."""
        return self.stopped is None or self.receives_marketing

    @property
    def shares(self) -> bool:
        """As the gate's ``affiliate_shareable`` decides for every affiliate (one affiliate
        may be excluded on its own besides)."""
        return self.sharing_opted_in and self.receives_marketing and not self.sharing_suppressed


def standing(source: Session | PageReads, address_id: int) -> Standing:
    """One statement, built once per process: what the gate says, on every row of the
    active suppressions (why, and since when, for the ones only staff may lift); one row
    with no suppression when there is none. On a session or a page's own cursor."""
    return standing_of(rows(source, _read(), {"s_address_id": address_id}))


def standing_of(found: Sequence[Sequence[Any]]) -> Standing:
    """:func:`standing` from its statement's rows (:func:`statement`), wherever they were
    read (the preference page reads them with its link, in one statement)."""
    marketing_block, service_block, sharing = found[0][:3]
    # (id, scope, reason, created_at) of each active suppression
    active = [row[3:] for row in found if row[3] is not None]
    staff_only = {reason for _, _, reason, _ in active} - {str(r) for r in RECIPIENT_LIFTABLE}
    stopped = None
    if staff_only:
        first = min(
            (row for row in active if row[2] in staff_only),
            key=lambda row: (row[1] not in (GLOBAL_SCOPE, str(Scope.MARKETING)), row[0]),
        )
        stopped = StaffStop(STAFF_REASONS.get(first[2], "of a request"), first[3])
    return Standing(
        receives_marketing=marketing_block is None,
        sharing_opted_in=sharing == ConsentStatus.OPTED_IN,
        receives_service_notices=service_block is None,
        stopped=stopped,
        sharing_suppressed=any(scope in _SHARING_SCOPES for _, scope, _, _ in active),
    )


@cache
def _read() -> Prebuilt:
    return Prebuilt(statement())


@cache
def statement() -> Any:
    """The gate's answers and the active suppressions, by ``s_address_id``."""
    gate, active = (s.subquery() for s in _statements())
    return (
        select(*gate.c, active.c.id, active.c.scope, active.c.reason, active.c.created_at)
        .select_from(gate.outerjoin(active, true()))
        .order_by(active.c.id)
    )


def _statements() -> tuple[Any, Any]:
    address_id: BindParameter[int] = bindparam("s_address_id")
    sharing = (
        select(ConsentState.status)
        .where(ConsentState.address_id == address_id, ConsentState.scope == str(Scope.AFFILIATES))
        .scalar_subquery()
    )
    gate = select(
        blocking_reason(address_id, Purpose.MARKETING),
        blocking_reason(address_id, Purpose.SERVICE_NOTICE),
        sharing,
    )
    columns = Suppression.__table__.c
    active = (
        select(columns.id, columns.scope, columns.reason, columns.created_at)
        .where(columns.address_id == address_id, columns.lifted_at.is_(None))
        .order_by(columns.id)
    )
    return inline_constants(gate), inline_constants(active)


def done_messages(codes: str | None, now: Standing) -> list[str]:
    """The sentences for ``?done=`` codes (unknown codes are ignored)."""
    asked = [code for code in (codes or "").split(",") if code in DONE]
    messages = [DONE[code] for code in asked]
    if "sharing-on" in asked and not now.shares:
        messages.append(
            "Sharing starts only while you receive our marketing e-mail."
            if not now.receives_marketing
            else "Your details are still not shared: our staff stopped sharing them."
        )
    return messages
