"""Staff suppressions by hand and from a file (dispatcher/contacts/suppress.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import ImportFileError
from dispatcher.contacts.suppress import import_suppressions, suppress_address
from dispatcher.db import session_scope
from dispatcher.privacy.erasure import erase_person
from dispatcher.settings import Settings
from suppression.models import Address, Reason, Suppression
from suppression.suppressions import SuppressionError
from suppression.tokens import TokenSigner
from tests.unit.dispatcher.privacy.test_erasure import every_text


def _erase(settings: Settings, sessions: sessionmaker[Session], address: str) -> None:
    with session_scope(sessions) as session:
        signer = TokenSigner(settings.secret_keys)
        erase_person(session, signer, address, reason="request 7", actor="dpo")


def test_suppressing_an_erased_address_by_hand_does_not_store_it_in_clear_again(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Red team (h/redteam-input): a suppression file (or the CLI, or the console) naming an
    erased person wrote their address back into ``addresses`` in clear. It is answered as
    already suppressed: the erased suppression blocks all mail."""
    _erase(settings, session_factory, "gone@example.org")
    path = tmp_path / "s.csv"
    path.write_text("email,reason\nGone@example.org,postal_request\n", encoding="utf-8")
    report = import_suppressions(
        session_factory, path, actor="staff", signer=TokenSigner(settings.secret_keys)
    )
    assert (report.created, report.existing, report.erased, report.errors) == (0, 1, [2], [])
    with session_scope(session_factory) as session:
        assert "gone@example.org" not in every_text(session).lower()
        added = suppress_address(
            session,
            "gone@example.org",
            reason="legal",
            signer=TokenSigner(settings.secret_keys),
        )
        assert added.erased and not added.created
        erased = session.get(Suppression, added.suppression_id)
        assert erased is not None and erased.reason == Reason.ERASED
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
        assert "gone@example.org" not in every_text(session).lower()


def test_without_the_signer_nothing_is_stored_once_an_address_was_erased(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """An erased address can be recognised only with the keys; without them, refuse."""
    _erase(settings, session_factory, "gone@example.org")
    path = tmp_path / "s.csv"
    path.write_text("email,reason\ngone@example.org,legal\n", encoding="utf-8")
    with pytest.raises(ImportFileError):
        import_suppressions(session_factory, path, actor="staff")
    with session_scope(session_factory) as session, pytest.raises(SuppressionError):
        suppress_address(session, "gone@example.org", reason="legal")
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Address)) == 1


def test_an_address_not_erased_is_suppressed_as_before(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    _erase(settings, session_factory, "gone@example.org")
    with session_scope(session_factory) as session:
        added = suppress_address(
            session, "ann@example.org", reason="legal", signer=TokenSigner(settings.secret_keys)
        )
        assert added.created and not added.erased
        assert session.scalar(select(Address.id).where(Address.address == "ann@example.org"))
