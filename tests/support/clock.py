"""Signed tokens made as if earlier, to test expiry without a clock that goes backwards."""

from __future__ import annotations

import time
from typing import Any

import itsdangerous.timed
import pytest

from suppression.tokens import LinkPurpose, TokenSigner


def signed_ago(
    monkeypatch: pytest.MonkeyPatch,
    signer: TokenSigner,
    purpose: LinkPurpose,
    payload: dict[str, Any],
    seconds: float,
) -> str:
    """``signer.sign_timed(purpose, payload)`` as it would have been ``seconds`` ago."""
    with monkeypatch.context() as patch:
        patch.setattr(
            itsdangerous.timed.TimestampSigner,
            "get_timestamp",
            lambda self: int(time.time() - seconds),
        )
        return signer.sign_timed(purpose, payload)
