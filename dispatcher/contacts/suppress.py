"""Staff actions on the suppression list: by hand, in bulk, and lifting with a reason.

A suppression that stops marketing also stops queued deliveries to that address at once.
An address erased at its owner's request is never written back in clear: suppressing it
again is answered as already suppressed (its ``erased`` suppression blocks all mail).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.contacts.importer import ImportFileError, RowError, open_csv
from dispatcher.db import session_scope
from suppression.address import InvalidAddress, canonical_address
from suppression.erasure import any_erased, erased_address_id
from suppression.models import GLOBAL_SCOPE, Address, Reason, Scope
from suppression.registry import ensure_address, find_address
from suppression.suppressions import (
    SuppressionError,
    active_suppressions,
    add_suppression,
    lift_suppressions,
    valid_reason,
    valid_scope,
)
from suppression.tokens import TokenSigner
from suppression.unsubscribe import unsubscribe_address

# What a hand-made suppression covers unless staff say otherwise: a recipient's own
# unsubscribe is about marketing; everything else means "no mail at all".
DEFAULT_SCOPE = {Reason.UNSUBSCRIBE: str(Scope.MARKETING)}

ERASED_ANSWER = (
    "already suppressed: erased at its owner's request, it receives no mail at all "
    "(its address is not stored again)"
)


@dataclass(frozen=True)
class Suppressed:
    suppression_id: int
    created: bool
    stopped: int  # queued deliveries cancelled because of it
    # The address was erased on request: nothing was stored, its erased suppression answers.
    erased: bool = False


def default_scope(reason: Reason) -> str:
    return DEFAULT_SCOPE.get(reason, GLOBAL_SCOPE)


def suppress_address(
    session: Session,
    address: str,
    *,
    reason: str,
    scope: str | None = None,
    note: str | None = None,
    actor: str | None = None,
    source: str = "staff",
    signer: TokenSigner | None = None,
) -> Suppressed:
    """Suppress ``address`` (raises InvalidAddress or SuppressionError, changing nothing).

    ``signer`` recognises an address erased at its owner's request; it may be left out only
    while no address was ever erased. Such an address is answered with its ``erased``
    suppression (``erased=True``) and never stored in clear again.
    """
    checked = valid_reason(reason)
    scope = valid_scope(scope or default_scope(checked))
    canonical = canonical_address(address)
    if find_address(session, canonical) is None:
        erased = _erased_suppression(session, signer, canonical)
        if erased is not None:
            return Suppressed(erased, created=False, stopped=0, erased=True)
    address_id = ensure_address(session, canonical)
    if checked == Reason.UNSUBSCRIBE and scope == str(Scope.MARKETING):
        # The recipient's own wish, passed on by staff: the same act as their link.
        row = session.get(Address, address_id)
        assert row is not None
        done = unsubscribe_address(
            session, row, stop_queued=stop_queued, source=source, actor=actor, note=note
        )
        return Suppressed(done.suppression_id, done.newly_suppressed, done.stopped)
    added = add_suppression(
        session, address_id, scope=scope, reason=checked, source=source, note=note, actor=actor
    )
    # Deliveries are marketing or service mail; an affiliate scope has none queued.
    stopped = 0
    if scope in (GLOBAL_SCOPE, str(Scope.MARKETING)):
        stopped = stop_queued(session, address_id)
    return Suppressed(added.suppression_id, added.created, stopped)


def _erased_suppression(session: Session, signer: TokenSigner | None, canonical: str) -> int | None:
    """The id of the ``erased`` suppression of ``canonical`` if it was erased, else None."""
    if signer is None:
        if any_erased(session):
            raise SuppressionError(
                "addresses were erased on request: suppressing one needs the signing keys"
            )
        return None
    address_id = erased_address_id(session, signer, canonical)
    if address_id is None:
        return None
    found = [s.id for s in active_suppressions(session, address_id) if s.reason == Reason.ERASED]
    if not found:  # an erased hash always keeps its suppression; be safe all the same
        return add_suppression(
            session, address_id, scope=GLOBAL_SCOPE, reason=Reason.ERASED, source="erasure"
        ).suppression_id
    return found[0]


def lift_address(
    session: Session, address: str, *, why: str, actor: str, only: str | None = None
) -> int:
    """Staff override: lift the address's active suppressions (or those of one reason)."""
    row = find_address(session, address)
    reasons = [valid_reason(only)] if only else None
    if row is None:
        raise SuppressionError(f"{address!r} is not on the suppression list")
    count = lift_suppressions(session, row.id, why=why, actor=actor, reasons=reasons)
    if count == 0:
        raise SuppressionError(
            f"{address!r} has no active suppression" + (f" for {only}" if only else "")
        )
    return count


@dataclass
class SuppressImportReport:
    created: int = 0
    existing: int = 0
    # Rows naming an address erased on request (counted in ``existing`` too): not stored.
    erased: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def import_suppressions(
    sessions: sessionmaker[Session],
    path: Path | str,
    *,
    actor: str | None = None,
    signer: TokenSigner | None = None,
) -> SuppressImportReport:
    """Bulk suppressions from CSV (``email,reason[,scope][,note]``); bad rows reported.

    A file that is not UTF-8 or lacks a required column raises ImportFileError, adding nothing;
    so does a file given without ``signer`` once an address was erased on request (the signer
    recognises them, so that they are not stored in clear again).
    """
    report = SuppressImportReport()
    with open_csv(path) as (_, handle):
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        missing = {"email", "reason"} - set(header)
        if missing:
            raise ImportFileError(f"the header lacks {', '.join(sorted(missing))}")
        with session_scope(sessions) as session:
            if signer is None and any_erased(session):
                raise ImportFileError(
                    "addresses were erased on request: this import needs the signer"
                )
            for record in reader:
                _import_row(
                    session, record, reader.line_num, report, actor, Path(path).name, signer
                )
    return report


def _import_row(
    session: Session,
    record: dict[str, str | None],
    line: int,
    report: SuppressImportReport,
    actor: str | None,
    file_name: str,
    signer: TokenSigner | None,
) -> None:
    reason = (record.get("reason") or "").strip()
    scope = (record.get("scope") or "").strip() or None
    try:
        checked = valid_reason(reason)
    except SuppressionError as exc:
        report.errors.append(RowError(line, "reason", str(exc)))
        return
    try:
        valid_scope(scope or default_scope(checked))
    except SuppressionError as exc:
        report.errors.append(RowError(line, "scope", str(exc)))
        return
    try:
        with session.begin_nested():
            added = suppress_address(
                session,
                record.get("email") or "",
                reason=reason,
                scope=scope,
                note=(record.get("note") or "").strip() or None,
                actor=actor,
                source=f"import:{file_name}",
                signer=signer,
            )
    except InvalidAddress as exc:
        report.errors.append(RowError(line, "email", str(exc)))
        return
    if added.erased:
        report.erased.append(line)
    if added.created:
        report.created += 1
    else:
        report.existing += 1
