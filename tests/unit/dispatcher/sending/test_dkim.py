"""DKIM: with a key configured, each message is signed over the headers one-click needs,
and dkimpy verifies it; with none, messages are unsigned."""

from __future__ import annotations

import base64
import email
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dispatcher.models import Campaign
from dispatcher.sending.composing import ClaimedRow, MessageFactory
from dispatcher.sending.dkim_signing import DkimError, DkimSigner
from dispatcher.settings import Settings
from suppression.tokens import TokenSigner
from tests.conftest import settings_for

ROW = ClaimedRow(7, 9, 11, "ann@example.com", "Ann", "Example")


def keypair(tmp_path: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def factory(settings: Settings, purpose: str = "marketing") -> MessageFactory:
    campaign = Campaign(
        id=5,
        name="n",
        subject="Hello {{ greeting_name }}",
        template="new-releases",
        purpose=purpose,
    )
    return MessageFactory(settings, campaign, TokenSigner(settings.secret_keys))


def test_signed_message_verifies_and_covers_the_one_click_headers(tmp_path: Path) -> None:
    key_file, record = keypair(tmp_path)
    settings = settings_for(tmp_path / "var", dkim_key_file=str(key_file), dkim_selector="s1")
    raw = factory(settings).build(ROW)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.killertracks.com."
        return record

    assert dkim.verify(raw, dnsfunc=dns)
    signature = email.message_from_bytes(raw)["DKIM-Signature"]
    signed = {
        h.strip().lower()
        for h in signature.replace("\r\n", "").split("h=")[1].split(";")[0].split(":")
    }
    assert {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    } <= signed
    # Altering a signed header breaks it.
    tampered = raw.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"
    )
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_without_a_key_nothing_is_signed(tmp_path: Path) -> None:
    raw = factory(settings_for(tmp_path / "var")).build(ROW)
    assert b"DKIM-Signature" not in raw


def test_an_unreadable_key_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DkimError, match="dkim_key_file"):
        DkimSigner(str(tmp_path / "missing.pem"), "s1", "killertracks.com")
