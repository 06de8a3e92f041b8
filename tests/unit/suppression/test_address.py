from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from suppression.address import (
    InvalidAddress,
    address_digest,
    canonical_address,
    delivery_address,
    is_delivery_form_of,
    mask_address,
)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("ann@example.com", "ann@example.com"),
        ("  Ann.Smith@Example.COM \t", "ann.smith@example.com"),
        ("user@BÜCHER.de", "user@xn--bcher-kva.de"),
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
        ("Straße@example.com", "strasse@example.com"),
    ],
)
def test_canonical_form(raw: str, canonical: str) -> None:
    assert canonical_address(raw) == canonical


def test_unicode_and_punycode_domains_are_one_address() -> None:
    assert canonical_address("a@bücher.de") == canonical_address("A@XN--BCHER-KVA.DE")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("no-at-sign", "@-sign"),
        ("a@b", "period"),
        ("a@@example.com", ""),
        ("a@example.com\r\nBcc: victim@example.com", "line break"),
        ("a\x00@example.com", "NUL"),
        ("x" * 250 + "@example.com", ""),
    ],
)
def test_invalid_addresses_are_rejected_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(InvalidAddress) as caught:
        canonical_address(raw)
    assert why in str(caught.value)
    assert str(caught.value)


def test_mask_hides_most_of_the_address() -> None:
    assert mask_address("ann.smith@example.com") == "a***@e***.com"
    assert "ann.smith" not in mask_address("ann.smith@example.com")
    assert mask_address("ann@mail.example.co.uk") == "a***@m***.uk"  # only the last label shown
    assert mask_address("ann@localhost") == "a***@l***"  # no dot: nothing of the domain but one


def test_digest_is_sha256_of_canonical_form() -> None:
    assert address_digest("ann@example.com") == (
        "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476"
    )


@pytest.mark.parametrize(
    ("given", "delivery"),
    [
        ("Jörg.Straße@Example.COM", "Jörg.Straße@example.com"),
        ("  Ann.Smith@Example.COM \t", "Ann.Smith@example.com"),
        ("İdil@example.com", "İdil@example.com"),
        ("user@BÜCHER.de", "user@xn--bcher-kva.de"),
        ("ΣΑΣ@x.org", "ΣΑΣ@x.org"),
        ("Jo\u0308rg@x.org", "J\u00f6rg@x.org"),  # NFC, as RFC 6532 asks
    ],
)
def test_delivery_form_keeps_the_local_part_as_given(given: str, delivery: str) -> None:
    assert delivery_address(given) == delivery
    # The one relation the claim relies on: the key is the delivery form case-folded.
    assert canonical_address(given) == delivery.casefold()
    assert is_delivery_form_of(delivery, canonical_address(given))


def test_the_folded_key_is_not_the_mailbox() -> None:
    assert canonical_address("Straße@example.com") == canonical_address("STRASSE@example.com")
    assert delivery_address("Straße@example.com") != delivery_address("STRASSE@example.com")
    assert not is_delivery_form_of("bob@example.com", canonical_address("ann@example.com"))


_LOCAL = "abcXYZ019.!#$%&'*+/=?^_`{|}~-\"(),:;<>@[\\] é"
_DOMAIN = "abcxyzABC019.-_é"


@given(
    local=st.text(alphabet=_LOCAL, min_size=0, max_size=70),
    domain=st.one_of(
        st.text(alphabet=_DOMAIN, min_size=0, max_size=30),
        st.sampled_from(["example.com", "x.invalid", "localhost", "a..b", "-a.com", "1.2.3.4"]),
    ),
)
@settings(max_examples=400, deadline=None)
@example(local=" 0", domain="example.com")
def test_the_quick_path_agrees_with_email_validator(local: str, domain: str) -> None:
    """canonical_address decides plain addresses without the full parse; same answers."""
    from suppression.address import _canonical_in_full

    text = f"{local}@{domain}"

    def outcome(fn: Callable[[str], str]) -> tuple[str, str]:
        try:
            return ("ok", fn(text))
        except InvalidAddress as exc:
            return ("invalid", str(exc))

    # Both trim first (canonical_address's contract); the full parse alone would refuse the
    # surrounding space that hypothesis found (local part ' 0').
    quick, full = outcome(canonical_address), outcome(lambda t: _canonical_in_full(t.strip()))
    assert quick[0] == full[0]
    if quick[0] == "ok":
        assert quick == full


def _greek_address(last_label: int) -> str:
    """'ΐ' is 2 octets and case-folds to 3 characters: this address grows by one when folded."""
    return f"ΐ{'a' * 40}@{'b' * 63}.{'c' * 63}.{'d' * 63}.{'e' * last_label}.com"


def test_an_address_that_folding_lengthens_past_254_characters_is_refused() -> None:
    fits = _greek_address(14)  # 253 octets; its key is exactly 254 characters
    assert len(fits.encode()) == 253 and len(canonical_address(fits)) == 254
    with pytest.raises(InvalidAddress, match="^the address is longer than 254 characters$"):
        canonical_address(_greek_address(15))  # 254 octets, a key of 255


def test_a_quoted_local_part_is_refused() -> None:
    with pytest.raises(InvalidAddress, match="Quoting the part before the @-sign"):
        canonical_address('"ann smith"@example.com')


@pytest.mark.parametrize("given", ["@example.com", "ann@", "ann.example.com", "  "])
def test_delivery_address_needs_a_local_part_and_a_domain(given: str) -> None:
    with pytest.raises(InvalidAddress, match="^the address has no local part or no domain$"):
        delivery_address(given)


def test_a_domain_is_written_in_ascii_without_transitional_mapping() -> None:
    """IDNA 2008 (non-transitional): 'faß.de' is its own domain, not 'fass.de'."""
    assert delivery_address("Ann@faß.de") == "Ann@xn--fa-hia.de"
    with pytest.raises(InvalidAddress, match="^the domain cannot be written in ASCII: "):
        delivery_address("ann@☃.com")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (None, "the address is missing"),
        (" \t ", "the address is empty"),
        ("ann@exam\nple.com", "the address contains a line break or NUL character"),
    ],
)
def test_what_is_not_an_address_is_refused_with_why(raw: object, why: str) -> None:
    with pytest.raises(InvalidAddress) as caught:
        canonical_address(raw)  # type: ignore[arg-type]
    assert str(caught.value) == why
