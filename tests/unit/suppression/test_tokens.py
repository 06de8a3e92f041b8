from __future__ import annotations

import hashlib

import pytest

from suppression.tokens import (
    BadToken,
    LinkPurpose,
    LinkSubject,
    TokenOutcome,
    TokenSigner,
    key_id,
)

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
    assert str(caught.value) == "this link has expired"


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


def test_a_key_of_exactly_16_characters_is_enough_and_the_errors_name_the_setting() -> None:
    TokenSigner(["k" * 16])
    with pytest.raises(ValueError, match=r"^no signing key configured \(DISPATCHER_SECRET_KEYS\)$"):
        TokenSigner(["", ""])
    with pytest.raises(ValueError, match="^every signing key must be at least 16 characters long$"):
        TokenSigner([NEW, "k" * 15])


def test_key_ids_tags_and_erasure_digests_keep_their_published_values() -> None:
    """Issued links name their key, mail headers carry tags and erased addresses are stored as
    digests: a release that computed any of them differently would orphan what is out there."""
    signer = TokenSigner([NEW, OLD])
    assert key_id(NEW) == "c12fdb1d"
    assert signer.tag(LinkPurpose.MESSAGE_ID, 3, 42) == "deb167c0ba789eac3662"
    assert signer.keyed_digests("ada@example.org") == [
        "bf2cfa37212d36de2c905cefbec2404af315deb752bab99b567f2d131f0ada1e",  # newest key first
        "8cb31db2f61e51ccefda0dc6e129af223ae49ba61df3062c501d38259ef904c7",
    ]


@pytest.mark.parametrize(
    "payload",
    [
        {"a": 1, "b": 2, "c": 3, "d": 4},  # not a list, though of the right length
        [1, "kid", 42],  # too short
        [2, "kid", 42, None],  # a format this release does not know
        [1, "kid", "42", None],  # address id not an integer
        [1, "kid", True, None],  # a boolean is not an id
        [1, "kid", 42, "7"],  # campaign id not an integer
    ],
)
def test_a_link_we_signed_in_another_shape_is_malformed(payload: object) -> None:
    signer = TokenSigner([NEW])
    token = signer._serializer(LinkPurpose.UNSUBSCRIBE).dumps(payload)
    with pytest.raises(BadToken) as caught:
        signer.read_link(LinkPurpose.UNSUBSCRIBE, token)
    assert caught.value.outcome is TokenOutcome.MALFORMED


def test_a_signed_payload_that_does_not_decode_is_malformed() -> None:
    signer = TokenSigner([NEW])
    token = signer._serializer(LinkPurpose.UNSUBSCRIBE).make_signer().sign(b"not-json").decode()
    with pytest.raises(BadToken) as caught:
        signer.read_link(LinkPurpose.UNSUBSCRIBE, token)
    assert caught.value.outcome is TokenOutcome.MALFORMED


@pytest.mark.parametrize("token", [None, 12345, b"bytes"])
def test_a_token_that_is_not_text_is_malformed(token: object) -> None:
    with pytest.raises(BadToken) as caught:
        TokenSigner([NEW]).read_link(LinkPurpose.UNSUBSCRIBE, token)  # type: ignore[arg-type]
    assert caught.value.outcome is TokenOutcome.MALFORMED
    assert not TokenSigner([NEW]).check_tag(LinkPurpose.RETURN_PATH, None, 42)  # type: ignore[arg-type]


def _timed_token_of_length(signer: TokenSigner, length: int) -> str:
    for size in range(100, 1000):
        token = signer.sign_timed(LinkPurpose.AFFILIATE_DOWNLOAD, {"p": _noise(size)})
        if len(token) == length:
            return token
    raise AssertionError(f"no token of {length} characters")


def _noise(size: int) -> str:
    """Text zlib cannot shorten, so the token grows with it."""
    digests = (hashlib.sha256(str(i).encode()).hexdigest() for i in range(size // 64 + 1))
    return "".join(digests)[:size]


def test_tokens_longer_than_512_characters_are_refused_unread() -> None:
    signer = TokenSigner([NEW])
    assert signer.read_timed(
        LinkPurpose.AFFILIATE_DOWNLOAD, _timed_token_of_length(signer, 512), 60
    )
    with pytest.raises(BadToken) as caught:
        signer.read_timed(LinkPurpose.AFFILIATE_DOWNLOAD, _timed_token_of_length(signer, 514), 60)
    assert caught.value.outcome is TokenOutcome.MALFORMED


def test_timed_purposes_do_not_cross_and_a_dropped_key_is_named() -> None:
    signer = TokenSigner([NEW])
    token = signer.sign_timed(LinkPurpose.AFFILIATE_DOWNLOAD, {"export": 3})
    with pytest.raises(BadToken):
        signer.read_timed(LinkPurpose.SIGNUP_CONFIRM, token, 60)
    old = TokenSigner([OLD]).sign_timed(LinkPurpose.AFFILIATE_DOWNLOAD, {"export": 3})
    with pytest.raises(BadToken) as caught:
        signer.read_timed(LinkPurpose.AFFILIATE_DOWNLOAD, old, 60)
    assert caught.value.outcome is TokenOutcome.UNKNOWN_KEY


def test_timed_payloads_other_than_a_mapping_are_malformed_and_a_missing_key_id_is_fine() -> None:
    signer = TokenSigner([NEW])
    timed = signer._timed(LinkPurpose.AFFILIATE_DOWNLOAD)
    with pytest.raises(BadToken) as caught:
        signer.read_timed(LinkPurpose.AFFILIATE_DOWNLOAD, timed.dumps([1, 2]), 60)
    assert caught.value.outcome is TokenOutcome.MALFORMED
    assert signer.read_timed(LinkPurpose.AFFILIATE_DOWNLOAD, timed.dumps({"export": 3}), 60) == {
        "export": 3
    }


def _links_made_by_the_serializer(signer: TokenSigner, purpose: LinkPurpose, *ids: object) -> str:
    """The token itsdangerous's serializer makes for a link payload: the format in mail."""
    address_id, campaign_id = ids
    payload = [1, signer._newest_kid, address_id, campaign_id]
    return str(signer._serializer(purpose).dumps(payload))


@pytest.mark.parametrize(
    ("address_id", "campaign_id"),
    [
        (1, 1),
        (0, 0),
        (42, None),
        (12345, 17),
        (99_999_999, 123_456),
        (2**31 - 1, 2**31 - 1),
        # Payloads that zlib shortens: the token is the compressed form ("." first).
        (10**18, None),
        (10**18, 10**18),
        (1111111111111111111, 1111111111111111111),
        (2**63 - 1, 2**63 - 1),
    ],
)
@pytest.mark.parametrize("keys", [[NEW], [NEW, OLD]])
def test_sign_link_makes_the_serializers_token(
    address_id: int, campaign_id: int | None, keys: list[str]
) -> None:
    signer = TokenSigner(keys)
    for purpose in (LinkPurpose.UNSUBSCRIBE, LinkPurpose.PREFERENCES):
        token = signer.sign_link(purpose, address_id, campaign_id)
        assert token == _links_made_by_the_serializer(signer, purpose, address_id, campaign_id)
        assert signer.read_link(purpose, token) == LinkSubject(address_id, campaign_id)


def test_sign_link_makes_the_serializers_token_across_ids() -> None:
    signer = TokenSigner([NEW, OLD])
    ids = [*range(0, 3000, 7), *(10**n for n in range(19)), *(10**n - 1 for n in range(1, 19))]
    ids += [int("9" * n + "0" * (18 - n)) for n in range(19)]
    compressed = 0
    for n, address_id in enumerate(ids):
        campaign_id = ids[-1 - n] if n % 3 else None
        token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, address_id, campaign_id)
        made = _links_made_by_the_serializer(
            signer, LinkPurpose.UNSUBSCRIBE, address_id, campaign_id
        )
        assert token == made, (address_id, campaign_id)
        compressed += token.startswith(".")
        both = signer.sign_links(
            (LinkPurpose.UNSUBSCRIBE, LinkPurpose.PREFERENCES), address_id, campaign_id
        )
        assert both == [
            token,
            _links_made_by_the_serializer(signer, LinkPurpose.PREFERENCES, address_id, campaign_id),
        ]
    assert compressed  # both forms were compared


def test_tags_are_hmac_sha256_under_the_newest_key() -> None:
    import hmac

    signer = TokenSigner([NEW, OLD])
    expected = hmac.new(NEW.encode(), b"dispatcher.message-id:7.42", hashlib.sha256).hexdigest()
    assert signer.tag(LinkPurpose.MESSAGE_ID, 7, 42) == expected[:20]
    assert signer.tag(LinkPurpose.MESSAGE_ID, 7, 42) == signer.tag(LinkPurpose.MESSAGE_ID, 7, 42)


def test_a_wrapped_secret_opens_only_under_a_key_that_wrapped_it() -> None:
    old = TokenSigner(["old-key-0000000000000001"])
    wraps = old.wrap_secret(b"s" * 40)
    assert b"s" * 40 not in bytes.fromhex(next(iter(wraps.values()))[1])
    assert (
        TokenSigner(["new-key-0000000000000002", "old-key-0000000000000001"]).unwrap_secret(wraps)
        == b"s" * 40
    )
    assert TokenSigner(["new-key-0000000000000002"]).unwrap_secret(wraps) is None
    kid, (nonce, sealed) = next(iter(wraps.items()))
    flipped = bytes.fromhex(sealed)
    flipped = bytes([flipped[0] ^ 1]) + flipped[1:]
    assert old.unwrap_secret({kid: [nonce, flipped.hex()]}) is None
    assert old.unwrap_secret({kid: ["zz", sealed]}) is None
    assert old.unwrap_secret({kid: [nonce]}) is None
    assert len(bytes.fromhex(nonce)) == 12  # GCM's own nonce size
    # A wrap that does not open under the newer key still leaves the older key to try.
    both = TokenSigner(["new-key-0000000000000002", "old-key-0000000000000001"])
    damaged = {key_id("new-key-0000000000000002"): [nonce, flipped.hex()], **wraps}
    assert both.unwrap_secret(damaged) == b"s" * 40
    # Sealed under one key id, presented under another: the id is bound to the seal.
    other = TokenSigner(["other-key-000000000000003", "old-key-0000000000000001"])
    assert other.unwrap_secret({key_id("other-key-000000000000003"): [nonce, sealed]}) is None


def test_a_wrap_stored_by_this_version_still_opens() -> None:
    """A wrap as stored in ``erasure_secret`` (made once, kept): the format is for ever."""
    stored = {
        key_id("old-key-0000000000000001"): [
            "00112233445566778899aabb",
            "f6b5a09f6b299fb88016a4ec1fc86ddb58c9e9f19c5f8e971c7f891574b70a76"
            "f7b2ee38e1df40a9f7a01abe308f9ad7d18d2de171e06205",
        ]
    }
    assert TokenSigner(["old-key-0000000000000001"]).unwrap_secret(stored) == b"s" * 40
