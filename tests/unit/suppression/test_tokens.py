from __future__ import annotations

import pytest

from suppression.tokens import BadToken, LinkPurpose, LinkSubject, TokenOutcome, TokenSigner

NEW, OLD = "newest-key-0123456789", "older-key-0123456789"


def test_link_round_trip_carries_ids_not_the_address() -> None:
    signer = TokenSigner([NEW])
    token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, 42, 7)
    assert signer.read_link(LinkPurpose.UNSUBSCRIBE, token) == LinkSubject(42, 7)
    assert "@" not in token


def test_old_key_still_verifies_after_rotation() -> None:
    token = TokenSigner([OLD]).sign_link(LinkPurpose.UNSUBSCRIBE, 5)
    assert TokenSigner([NEW, OLD]).read_link(LinkPurpose.UNSUBSCRIBE, token).address_id == 5


def test_key_dropped_from_rotation_is_unknown() -> None:
    token = TokenSigner([OLD]).sign_link(LinkPurpose.UNSUBSCRIBE, 5)
    with pytest.raises(BadToken) as caught:
        TokenSigner([NEW]).read_link(LinkPurpose.UNSUBSCRIBE, token)
    assert caught.value.outcome is TokenOutcome.UNKNOWN_KEY


def test_purposes_do_not_cross() -> None:
    signer = TokenSigner([NEW])
    token = signer.sign_link(LinkPurpose.PREFERENCES, 5)
    with pytest.raises(BadToken):
        signer.read_link(LinkPurpose.UNSUBSCRIBE, token)


@pytest.mark.parametrize(
    ("mangle", "outcome"),
    [
        (lambda t: t[:-3] + ("aaa" if not t.endswith("aaa") else "bbb"), TokenOutcome.TAMPERED),
        (lambda t: t[: t.index(".") + 4], TokenOutcome.TAMPERED),
        (lambda t: t[:10], TokenOutcome.MALFORMED),
        (lambda t: "garbage", TokenOutcome.MALFORMED),
        (lambda t: "", TokenOutcome.MALFORMED),
        (lambda t: "x" * 5000, TokenOutcome.MALFORMED),
        (lambda t: "é..é", TokenOutcome.MALFORMED),
    ],
)
def test_bad_tokens_raise_with_their_outcome(mangle, outcome: TokenOutcome) -> None:
    signer = TokenSigner([NEW])
    token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, 42, 7)
    with pytest.raises(BadToken) as caught:
        signer.read_link(LinkPurpose.UNSUBSCRIBE, mangle(token))
    assert caught.value.outcome is outcome
    assert str(caught.value) == "this link is not valid"


def test_payload_changed_and_resigned_with_foreign_key_is_refused() -> None:
    forged = TokenSigner(["attacker-key-0123456789"]).sign_link(LinkPurpose.UNSUBSCRIBE, 1)
    with pytest.raises(BadToken):
        TokenSigner([NEW]).read_link(LinkPurpose.UNSUBSCRIBE, forged)


def test_timed_tokens_expire() -> None:
    signer = TokenSigner([NEW])
    token = signer.sign_timed(LinkPurpose.AFFILIATE_DOWNLOAD, {"export": 3})
    assert signer.read_timed(LinkPurpose.AFFILIATE_DOWNLOAD, token, 60) == {"export": 3}
    with pytest.raises(BadToken) as caught:
        signer.read_timed(LinkPurpose.AFFILIATE_DOWNLOAD, token, -1)
    assert caught.value.outcome is TokenOutcome.EXPIRED


@pytest.mark.parametrize("keys", [[], [""], ["short"]])
def test_no_usable_key_is_an_error(keys: list[str]) -> None:
    with pytest.raises(ValueError):
        TokenSigner(keys)


def test_header_tags_verify_case_blind_across_rotation_and_not_across_purposes() -> None:
    old = TokenSigner(["older-key-0000000000"])
    new = TokenSigner(["newer-key-1111111111", "older-key-0000000000"])
    tag = old.tag(LinkPurpose.RETURN_PATH, 42)
    assert len(tag) == 20 and tag == tag.lower()
    assert new.check_tag(LinkPurpose.RETURN_PATH, tag.upper(), 42)  # MTAs may fold case
    assert not new.check_tag(LinkPurpose.RETURN_PATH, tag, 43)  # another delivery
    assert not new.check_tag(LinkPurpose.MESSAGE_ID, tag, 42)  # another purpose
    assert not TokenSigner(["newer-key-1111111111"]).check_tag(LinkPurpose.RETURN_PATH, tag, 42)
    assert not new.check_tag(LinkPurpose.RETURN_PATH, tag[:-1], 42)
