"""One-click with the database away: a valid link is spooled and answered 202, a forged one
is refused and spooled nowhere; the spool is applied once the database is back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.inbound import spool
from dispatcher.inbound.spooled import apply_spooled
from dispatcher.settings import Settings
from dispatcher.web import create_app
from suppression.models import Suppression
from suppression.tokens import LinkPurpose, TokenSigner


def test_one_click_is_spooled_while_the_database_is_away_and_applied_after(
    settings: Settings,
    session_factory: sessionmaker[Session],
    contact_id: int,
    tmp_path: Path,
) -> None:
    (tmp_path / "not-a-database").mkdir()
    away = settings.replace(
        database_url=f"sqlite:///{tmp_path / 'not-a-database'}", spool_dir=str(tmp_path / "spool")
    )
    signer = TokenSigner(settings.secret_keys)
    token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, contact_id, 1)
    client = create_app(away).test_client()
    body = {"List-Unsubscribe": "One-Click"}

    assert client.post(f"/u/{token}", data=body).status_code == 202
    assert client.post(f"/u/{token[:-2]}xx", data=body).status_code == 400
    assert spool.pending(away.spool) == 1

    applied = spool.drain(
        away.spool,
        lambda payload, raw: apply_spooled(session_factory, settings, signer, payload, raw),
    )
    assert applied == 1 and spool.pending(away.spool) == 0
    with session_scope(session_factory) as session:
        reasons = session.scalars(
            select(Suppression.reason).where(Suppression.address_id == contact_id)
        ).all()
    assert reasons == ["unsubscribe"]


def test_pages_answer_503_with_nothing_changed_while_the_database_is_away(
    settings: Settings, contact_id: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What cannot be spooled (a page, a preference save) is answered 503 with Retry-After
    and the page that says nothing was changed, not a 500 with a traceback in the log."""
    (tmp_path / "not-a-database").mkdir()
    away = settings.replace(
        database_url=f"sqlite:///{tmp_path / 'not-a-database'}", spool_dir=str(tmp_path / "spool")
    )
    signer = TokenSigner(settings.secret_keys)
    unsubscribe = signer.sign_link(LinkPurpose.UNSUBSCRIBE, contact_id, 1)
    preferences = signer.sign_link(LinkPurpose.PREFERENCES, contact_id, 1)
    client = create_app(away).test_client()
    for path in (f"/u/{unsubscribe}", f"/preferences/{preferences}"):
        answer = client.get(path)
        assert answer.status_code == 503, path
        assert answer.headers["Retry-After"] == "60"
        assert "Nothing was changed" in answer.get_data(as_text=True)
    assert spool.pending(away.spool) == 0
    assert "Traceback" not in caplog.text
    assert "answered 503" in caplog.text
