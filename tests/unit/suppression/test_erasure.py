"""Erased addresses stay recognised across the documented key rotation (suppression/erasure.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import import_contacts
from dispatcher.db import session_scope
from dispatcher.privacy.erasure import erase_person
from dispatcher.settings import Settings
from suppression.erasure import ERASED_PREFIX, ErasureSecretLost, erased_among
from suppression.models import Address
from suppression.tokens import TokenSigner

NEW_KEY = "a-brand-new-key-after-rotation-0001"


def _import(sessions: sessionmaker[Session], tmp_path: Path, signer: TokenSigner):
    path = tmp_path / "c.csv"
    path.write_text("email,marketing_consent\ngone@example.org,yes\n", encoding="utf-8")
    return import_contacts(sessions, path, source="crm", signer=signer)


def test_an_erased_person_stays_unimportable_after_the_documented_key_rotation(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Red team (h/redteam-input): the hash was made under the newest signing key and
    recognised only under listed keys, so retiring the key (README: after a year) let the
    person be imported and mailed again. The README's rotation lists the new key first and
    the old ones for a while: during that time the new key wraps the erasure secret."""
    old = TokenSigner(settings.secret_keys)
    with session_scope(session_factory) as session:
        erase_person(session, old, "gone@example.org", reason="r", actor="dpo")
    during = TokenSigner([NEW_KEY, *settings.secret_keys])  # the year both are listed
    with session_scope(session_factory) as session:
        assert erased_among(session, during, ["gone@example.org"]) == {"gone@example.org"}
    rotated = TokenSigner([NEW_KEY])  # the old keys retired
    report = _import(session_factory, tmp_path, rotated)
    assert [e.line for e in report.errors] == [2], "the erased address came back"


def test_retiring_every_key_that_opens_the_secret_stops_rather_than_forgets(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A new key never listed beside an old one cannot open the secret: nothing that could add
    an erased person back goes on, and the message says what to do."""
    with session_scope(session_factory) as session:
        erase_person(
            session, TokenSigner(settings.secret_keys), "gone@example.org", reason="r", actor="x"
        )
    with pytest.raises(ErasureSecretLost, match="retired last"):
        _import(session_factory, tmp_path, TokenSigner([NEW_KEY]))
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Address)) == 1


def test_erasures_hashed_before_the_secret_are_still_recognised(
    settings: Settings, session: Session
) -> None:
    """Rows written under a signing key itself (before this version): the newest key's are
    the secret's own (it starts from that key); an older listed key's are checked too."""
    signer = TokenSigner(settings.secret_keys)
    newest, older = (
        signer.keyed_digests("ann@example.org")[0],
        signer.keyed_digests("bob@example.org")[1],
    )
    session.add_all(
        [Address(address=ERASED_PREFIX + newest), Address(address=ERASED_PREFIX + older)]
    )
    session.flush()
    found = erased_among(session, signer, ["ann@example.org", "bob@example.org", "cy@x.org"])
    assert found == {"ann@example.org", "bob@example.org"}
    during = TokenSigner([NEW_KEY, *settings.secret_keys])
    assert erased_among(session, during, ["ann@example.org"]) == {"ann@example.org"}
    assert erased_among(session, TokenSigner([NEW_KEY]), ["ann@example.org"]) == {"ann@example.org"}
