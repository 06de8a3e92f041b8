"""The one canonical form of an e-mail address.

Every comparison of addresses in this project goes through :func:`canonical_address`.
"""

from __future__ import annotations

import hashlib

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
