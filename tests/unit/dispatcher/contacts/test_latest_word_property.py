"""Property: any consent history, split into files imported in any order, ends in the states
and the ledger the rule gives when computed in plain Python, with every state its ledger's
latest word, and importing the same files again writes nothing.

This drives the set-based SQL path (dispatcher.contacts.staging → suppression.consent
.merge_consents), where the rule is expressed; the model below is written independently.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import import_contacts
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from suppression.consent import Verdict
from suppression.models import Address, Consent, ConsentState

ADDRESSES = ("ann@example.com", "bob@example.com")
TIMES = (None, "2015-01-01T00:00:00Z", "2015-01-02T00:00:00Z", "2015-01-03T00:00:00Z")
SCOPES = ("marketing", "affiliates")
ANSWERS = {"yes": "opted_in", "no": "opted_out", "": None}


@dataclass(frozen=True)
class Row:
    address: str
    marketing: str
    affiliates: str
    at: str | None


rows = st.builds(
    Row,
    st.sampled_from(ADDRESSES),
    st.sampled_from(list(ANSWERS)),
    st.sampled_from(list(ANSWERS)),
    st.sampled_from(TIMES),
)


@st.composite
def histories(draw: st.DrawFn) -> list[list[Row]]:
    history = draw(st.lists(rows, min_size=1, max_size=10))
    files = draw(st.integers(min_value=1, max_value=3))
    where = draw(st.lists(st.integers(0, files - 1), min_size=len(history), max_size=len(history)))
    split = [[r for r, w in zip(history, where, strict=True) if w == i] for i in range(files)]
    return draw(st.permutations([f for f in split if f]))


Key = tuple[int, float, int]
Ledger = Counter[tuple[str, str, str, str | None]]  # address, scope, status, consent_at


def model(files: list[list[Row]]) -> dict[tuple[str, str], str]:
    """The resulting states, by the rule in plain Python."""
    return replay(files)[0]


def replay(files: list[list[Row]]) -> tuple[dict[tuple[str, str], str], Ledger]:
    """The rule in plain Python, import by import: the states and what the ledger holds."""

    def key(status: str, at: str | None, imported: int) -> Key:
        out = 1 if status == "opted_out" else 0
        if at is None:
            # undated: an opt-in ranks below everything, an opt-out is as of its import
            return (0, imported, 0) if not out else (1, 1e12 + imported, out)
        return (1, datetime.fromisoformat(at).timestamp(), out)

    state: dict[tuple[str, str], tuple[Key, str]] = {}
    written: dict[tuple[str, str], list[tuple[Key, str, str | None]]] = {}
    for imported, rows_ in enumerate(files):
        for address in ADDRESSES:
            for scope in SCOPES:
                ledger = written.setdefault((address, scope), [])
                current = state.get((address, scope))
                seen: set[tuple[str, str | None]] = set()
                candidates, new = [], []
                for r in rows_:
                    status = ANSWERS[getattr(r, scope)]
                    if r.address != address or status is None or (status, r.at) in seen:
                        continue
                    seen.add((status, r.at))
                    if any(s == status and a == r.at for _, s, a in ledger):
                        continue  # known: the ledger holds it (an undated word: any time)
                    k = key(status, r.at, imported)
                    if current is None or k > current[0]:
                        if status == "opted_in" and current and current[1] == "opted_out":
                            continue  # an import never opts anyone back in
                        candidates.append((k, status, r.at))
                    else:
                        before = max((w for w in ledger if w[0] < k), default=None)
                        if status == "opted_in" and before and before[1] == "opted_out":
                            continue  # nor in the past: refused, as it was the first time
                        new.append((k, status, r.at))
                ledger += new + candidates
                if candidates:
                    k, status, _ = max(candidates)
                    state[(address, scope)] = (k, status)
    states = {k: status for k, (_, status) in state.items()}
    held: Ledger = Counter(
        (address, scope, status, at)
        for (address, scope), facts in written.items()
        for _, status, at in facts
    )
    return states, held


def write(path: Path, rows_: list[Row]) -> Path:
    lines = ["email,marketing_consent,affiliates_consent,consent_at"]
    lines += [f"{r.address},{r.marketing},{r.affiliates},{r.at or ''}" for r in rows_]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def check(factory: sessionmaker[Session], files: list[list[Row]], tmp: Path) -> None:
    for i, rows_ in enumerate(files):
        import_contacts(factory, write(tmp / f"{i}.csv", rows_), source="prop")
    with session_scope(factory) as session:
        got = {
            (a, s): status
            for a, s, status in session.execute(
                select(Address.address, ConsentState.scope, ConsentState.status).join(
                    Address, Address.id == ConsentState.address_id
                )
            )
        }
        states, ledger = replay(files)
        assert got == states
        held = Counter(
            (
                address,
                row.scope,
                row.status,
                f"{row.occurred_at:%Y-%m-%dT%H:%M:%SZ}" if row.dated else None,
            )
            for row, address in session.execute(
                select(Consent, Address.address).join(Address, Address.id == Consent.address_id)
            )
        )
        assert held == ledger
        # Every state is its ledger row, and no ledger row is a later word than the state.
        for state in session.scalars(select(ConsentState)):
            ledger = session.get(Consent, state.consent_id)
            assert ledger is not None
            assert (ledger.status, ledger.occurred_at, ledger.dated) == (
                state.status,
                state.occurred_at,
                state.dated,
            )

            def rank(status: str, at: datetime, dated: bool) -> tuple[int, datetime, int]:
                tier = 0 if (not dated and status == "opted_in") else 1
                return (tier, at, 1 if status == "opted_out" else 0)

            for row in session.scalars(
                select(Consent).where(
                    Consent.address_id == state.address_id, Consent.scope == state.scope
                )
            ):
                assert rank(row.status, row.occurred_at, row.dated) <= rank(
                    state.status, state.occurred_at, state.dated
                )
        # Importing everything again changes nothing.
        ledger_size = len(session.scalars(select(Consent.id)).all())
    for i, rows_ in enumerate(files):
        report = import_contacts(factory, write(tmp / f"again{i}.csv", rows_), source="prop")
        written = (Verdict.CHANGED, Verdict.RENEWED, Verdict.HISTORY)
        assert sum(report.count(v) for v in written) == 0
    with session_scope(factory) as session:
        assert len(session.scalars(select(Consent.id)).all()) == ledger_size


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=histories())
def test_imports_keep_the_latest_word_on_sqlite(
    _migrated_template: Path, files: list[list[Row]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "dispatcher.db"
        shutil.copy(_migrated_template, db)
        engine = make_engine(f"sqlite:///{db}")
        try:
            check(make_sessionmaker(engine), files, Path(tmp))
        finally:
            engine.dispose()


def test_the_model_itself() -> None:
    """The model says what the issue says, on the cases it names."""
    later_out = [Row(ADDRESSES[0], "yes", "", TIMES[1]), Row(ADDRESSES[0], "no", "", TIMES[2])]
    assert model([later_out]) == {(ADDRESSES[0], "marketing"): "opted_out"}
    tie = [Row(ADDRESSES[0], "yes", "", TIMES[1]), Row(ADDRESSES[0], "no", "", TIMES[1])]
    assert model([tie[::-1]]) == {(ADDRESSES[0], "marketing"): "opted_out"}
    undated_in = [Row(ADDRESSES[0], "yes", "", None)]
    old_out = [Row(ADDRESSES[0], "no", "", TIMES[1])]
    assert model([undated_in, old_out]) == {(ADDRESSES[0], "marketing"): "opted_out"}
    # an older opt-out is history; a later opt-in cannot undo an opt-out already held
    assert model([[later_out[1]], [later_out[0]]]) == {(ADDRESSES[0], "marketing"): "opted_out"}
    assert model([[Row(ADDRESSES[0], "yes", "", TIMES[3])], old_out]) == {
        (ADDRESSES[0], "marketing"): "opted_in"
    }
    # an opt-in just after an opt-out is refused, also once a later opt-out is the state
    out_in_out = [
        old_out,
        [Row(ADDRESSES[0], "no", "", TIMES[3])],
        [Row(ADDRESSES[0], "yes", "", TIMES[2])],
    ]
    assert (ADDRESSES[0], "marketing", "opted_in", TIMES[2]) not in replay(out_in_out)[1]
    assert (ADDRESSES[0], "marketing", "opted_in", TIMES[2]) in replay(out_in_out[1:])[1]
