"""The two forms of an e-mail address: the matching key and the address we mail.

* :func:`canonical_address` gives the **matching key**: every comparison of addresses (the
  gate, suppressions, de-duplication, affiliates' digests) goes through it. It case-folds the
  whole address, so ``Ann@x.org`` and ``ann@x.org`` are one person and a suppression of one
  catches the other.
* :func:`delivery_address` gives the **address we mail**: the address as the person gave it,
  trimmed, with its domain in lower-case ASCII (IDNA). Its local part keeps its case and its
  letters: ``Straße@x.org`` is another mailbox than ``strasse@x.org`` to the server that
  holds it, so a message goes to the former, never to the key.

The two always agree: ``canonical_address(x) == delivery_address(x).casefold()`` for every
address ``canonical_address`` accepts (:func:`is_delivery_form_of` checks it cheaply).
"""

from __future__ import annotations

import hashlib
import unicodedata

import idna
from email_validator import EmailNotValidError, validate_email

MAX_ADDRESS_LENGTH = 254


class InvalidAddress(ValueError):
    """The text given is not a deliverable-looking e-mail address; the message says why."""


def canonical_address(raw: str) -> str:
    """Return the canonical form of ``raw``: trimmed, IDNA (ASCII) domain, case-folded.

    The whole address is case-folded, local part included: a marketing list must treat
    ``Ann@x.org`` and ``ann@x.org`` as one person, and a suppression must catch both.
    Raises :class:`InvalidAddress` with a human reason when ``raw`` cannot be an address.
    """
    if not isinstance(raw, str):
        raise InvalidAddress("the address is missing")
    text = raw.strip()
    if not text:
        raise InvalidAddress("the address is empty")
    if any(ch in text for ch in "\r\n\x00"):
        raise InvalidAddress("the address contains a line break or NUL character")
    try:
        checked = validate_email(
            text, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=False
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    domain = checked.ascii_domain or checked.domain
    local = checked.local_part
    if local is None:
        raise InvalidAddress("the address has no local part")
    canonical = f"{local.casefold()}@{domain.lower()}"
    if len(canonical) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(f"the address is longer than {MAX_ADDRESS_LENGTH} characters")
    return canonical


def delivery_address(given: str) -> str:
    """The address to mail for ``given``, an address :func:`canonical_address` accepted
    (a contact's submitted address): trimmed, domain lower-case ASCII (IDNA), local part as
    given (in Unicode NFC, as RFC 6532 asks).

    It does not validate (that is :func:`canonical_address`'s job, done when the address was
    taken in), so it is cheap enough for every claimed row; :class:`InvalidAddress` when
    ``given`` has no ``@`` or its domain cannot be written in ASCII.
    """
    local, at, domain = given.strip().rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress("the address has no local part or no domain")
    if not local.isascii():
        local = unicodedata.normalize("NFC", local)
    if domain.isascii():
        domain = domain.lower()
    else:
        try:
            domain = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidAddress(f"the domain cannot be written in ASCII: {exc}") from None
    return f"{local}@{domain}"


def is_delivery_form_of(delivery: str, canonical: str) -> bool:
    """True when ``delivery`` (from :func:`delivery_address`) is an address whose matching
    key is ``canonical``: the message goes to the very address the gate checked."""
    return delivery.casefold() == canonical


def address_digest(canonical: str) -> str:
    """SHA-256 hex digest of an already canonical address (what affiliates receive)."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def mask_address(canonical: str) -> str:
    """A partly hidden form for pages shown to whoever holds a link: ``a***@e***.com``."""
    local, _, domain = canonical.partition("@")
    head, dot, tld = domain.rpartition(".")
    if not dot:
        head, tld = domain, ""
    masked_domain = (head[:1] + "***") + (f".{tld}" if tld else "")
    return f"{local[:1]}***@{masked_domain}"
