"""The one place that signs and verifies tokens.

Each purpose has its own salt, so a token made for one purpose never verifies for another.
Keys are a list, newest first: the first signs, every one verifies, so a link keeps working
while its key stays in the rotation list. Payloads carry ids, never an address: a token is
readable by whoever holds the link.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import (
    BadData,
    BadSignature,
    SignatureExpired,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)
from itsdangerous.signer import HMACAlgorithm

_FORMAT = 1
_MAX_TOKEN_LENGTH = 512
_TAG_LENGTH = 20  # hex digits: an 80-bit MAC


class TokenOutcome(enum.StrEnum):
    VALID = "valid"
    MALFORMED = "malformed"
    TAMPERED = "tampered"
    UNKNOWN_KEY = "unknown_key"
    EXPIRED = "expired"
    UNKNOWN_SUBJECT = "unknown_subject"


class BadToken(Exception):
    """A link that does not verify. Its message is safe to show to whoever followed it."""

    def __init__(self, outcome: TokenOutcome, message: str = "this link is not valid") -> None:
        super().__init__(message)
        self.outcome = outcome


class LinkPurpose(enum.StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    AFFILIATE_DOWNLOAD = "affiliate-download"
    FORM = "form"  # CSRF: a form's proof that it came from our own page
    SIGNUP_CONFIRM = "signup-confirm"  # double opt-in: expiring, names a pending signup
    # Short tags carried in mail headers (see TokenSigner.tag).
    RETURN_PATH = "return-path"  # VERP: bounces+d<delivery id>.<tag>@domain
    MESSAGE_ID = "message-id"  # <c<campaign>.r<contact>.<tag>@domain>
    STAFF_PASSWORD = "staff-password"  # one-time, expiring set-password link for staff
    CONSOLE_SESSION = "console-session"  # the staff console's session cookie


@dataclass(frozen=True)
class LinkSubject:
    """Whom a recipient link is about: the address row, and the campaign that carried it."""

    address_id: int
    campaign_id: int | None


def _b64(data: bytes) -> bytes:
    """itsdangerous's base64: URL-safe alphabet, no padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _wrapping_key(key: str) -> bytes:
    """The AES-256 key that seals the erasure secret under signing key ``key``."""
    return hmac.new(key.encode(), b"dispatcher.erasure-wrap", hashlib.sha256).digest()


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


class TokenSigner:
    """Signs and verifies every token the product hands out."""

    def __init__(self, keys: Sequence[str]) -> None:
        keys = [k for k in keys if k]
        if not keys:
            raise ValueError("no signing key configured (DISPATCHER_SECRET_KEYS)")
        if any(len(k) < 16 for k in keys):
            raise ValueError("every signing key must be at least 16 characters long")
        self._keys = list(keys)
        self._kids = {key_id(k) for k in keys}
        self._newest_kid = key_id(keys[0])
        # itsdangerous signs with the last key and verifies with all of them.
        self._verify_order = list(reversed(self._keys))
        # Built once per purpose: recipient pages sign and verify on every request.
        self._serializers: dict[LinkPurpose, URLSafeSerializer] = {}
        self._timed_serializers: dict[LinkPurpose, URLSafeTimedSerializer] = {}
        # sign_link's keyed state per purpose: every message carries two links.
        self._link_macs: dict[LinkPurpose, tuple[Any, bytes]] = {}
        self._tag_macs = {k: hmac.new(k.encode("utf-8"), digestmod=hashlib.sha256) for k in keys}

    def _serializer(self, purpose: LinkPurpose) -> URLSafeSerializer:
        serializer = self._serializers.get(purpose)
        if serializer is None:
            serializer = URLSafeSerializer(self._verify_order, salt=f"dispatcher.{purpose.value}")
            self._serializers[purpose] = serializer
        return serializer

    def _timed(self, purpose: LinkPurpose) -> URLSafeTimedSerializer:
        serializer = self._timed_serializers.get(purpose)
        if serializer is None:
            serializer = URLSafeTimedSerializer(
                self._verify_order, salt=f"dispatcher.{purpose.value}"
            )
            self._timed_serializers[purpose] = serializer
        return serializer

    def _link_mac(self, purpose: LinkPurpose) -> tuple[Any, bytes]:
        """The HMAC keyed as the purpose's serializer signs (its derived key, its digest),
        ready to be copied, and the separator it puts before the signature."""
        cached = self._link_macs.get(purpose)
        if cached is None:
            signer = self._serializer(purpose).make_signer()
            algorithm = signer.algorithm
            if not isinstance(algorithm, HMACAlgorithm):
                raise TypeError("recipient links are signed with an HMAC")
            mac = hmac.new(signer.derive_key(), digestmod=algorithm.digest_method)
            cached = (mac, signer.sep)
            self._link_macs[purpose] = cached
        return cached

    # Recipient links: they never expire by time, only by key rotation.
    def sign_link(
        self, purpose: LinkPurpose, address_id: int, campaign_id: int | None = None
    ) -> str:
        return self.sign_links((purpose,), address_id, campaign_id)[0]

    def sign_links(
        self, purposes: Sequence[LinkPurpose], address_id: int, campaign_id: int | None = None
    ) -> list[str]:
        """One link per purpose for the same subject: for each, exactly what the purpose's
        serializer's ``dumps`` returns (tests compare), made without its per-call costs;
        every message carries two.

        The links share their payload, only the key signing it differs, so it is made once.
        The serializer zlib-compresses the payload's JSON and keeps the compressed form when
        that is shorter; ``zlib.compress`` sets up a 32 KiB window on every call (50 µs on
        a slow machine, more than the rest of the signing). Deflating with a 512-byte window
        makes the same choices on a payload shorter than 250 bytes, so its output has the
        same length (only the 2-byte header differs) and decides as well. When compression
        wins (ids of twelve digits and more, of repeated digits), the serializer
        makes the tokens.
        """
        payload = [_FORMAT, self._newest_kid, int(address_id), campaign_id]
        if campaign_id is not None and type(campaign_id) is not int:
            return [str(self._serializer(p).dumps(payload)) for p in purposes]
        # itsdangerous's compact JSON of these four values, written out.
        campaign = "null" if campaign_id is None else str(campaign_id)
        data = f'[{_FORMAT},"{self._newest_kid}",{payload[2]},{campaign}]'.encode("ascii")
        if len(data) >= 250 or len(zlib.compress(data, -1, 9)) < len(data) - 1:
            return [str(self._serializer(p).dumps(payload)) for p in purposes]
        signed = _b64(data)
        tokens = []
        for purpose in purposes:
            mac, sep = self._link_mac(purpose)
            mac = mac.copy()
            mac.update(signed)
            tokens.append(b"".join((signed, sep, _b64(mac.digest()))).decode("ascii"))
        return tokens

    def read_link(self, purpose: LinkPurpose, token: str) -> LinkSubject:
        """Verify a recipient link; raises :class:`BadToken` with the outcome when it fails."""
        serializer = self._serializer(purpose)
        payload = self._loads(serializer, token)
        if (
            not isinstance(payload, list)
            or len(payload) != 4
            or payload[0] != _FORMAT
            or not isinstance(payload[2], int)
            or isinstance(payload[2], bool)
            or not (payload[3] is None or isinstance(payload[3], int))
        ):
            raise BadToken(TokenOutcome.MALFORMED)
        return LinkSubject(address_id=payload[2], campaign_id=payload[3])

    def keyed_digests(self, text: str) -> list[str]:
        """HMAC-SHA256 of ``text`` under each key, newest first: the erased-address hashes.

        Keyed, so a leaked table cannot be reversed by hashing guessed addresses; one per key,
        so an erasure made under a key still in the rotation list is recognised.
        """
        data = text.encode("utf-8")
        return [
            hmac.new(f"dispatcher.erasure:{k}".encode(), data, hashlib.sha256).hexdigest()
            for k in self._keys
        ]

    # The erasure secret: one key for the erased-address hashes that outlives every signing
    # key, stored wrapped under each signing key (see suppression.erasure).
    def erasure_seed(self) -> bytes:
        """The erasure secret to start with: the newest key's own erasure HMAC key, so that
        hashes made before the secret existed (under that key) are the secret's too."""
        return f"dispatcher.erasure:{self._keys[0]}".encode()

    def wrap_secret(self, secret: bytes) -> dict[str, list[str]]:
        """``secret`` sealed under each key, by key id: [nonce, sealed], both hex. AES-256-GCM
        (``cryptography``) under a key derived from the signing key, the key's id as
        associated data: a wrong key or a changed byte opens nothing."""
        return {key_id(k): self._seal(k, secret) for k in self._keys}

    def unwrap_secret(self, wraps: dict[str, Any]) -> bytes | None:
        """The secret of :meth:`wrap_secret`'s output under any key we hold, or None."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        for key in self._keys:
            kid = key_id(key)
            sealed = wraps.get(kid)
            if not (isinstance(sealed, list) and len(sealed) == 2):
                continue
            try:
                nonce, data = bytes.fromhex(sealed[0]), bytes.fromhex(sealed[1])
                return AESGCM(_wrapping_key(key)).decrypt(nonce, data, kid.encode())
            except (InvalidTag, TypeError, ValueError):
                continue
        return None

    @staticmethod
    def secret_digest(secret: bytes, text: str) -> str:
        """HMAC-SHA256 of ``text`` under ``secret`` (an erased address's hash)."""
        return hmac.new(secret, text.encode("utf-8"), hashlib.sha256).hexdigest()

    @staticmethod
    def _seal(key: str, secret: bytes) -> list[str]:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        sealed = AESGCM(_wrapping_key(key)).encrypt(nonce, secret, key_id(key).encode())
        return [nonce.hex(), sealed.hex()]

    # Expiring tokens (affiliate downloads, signup confirmations, form tokens).
    def sign_timed(self, purpose: LinkPurpose, payload: dict[str, Any]) -> str:
        return str(self._timed(purpose).dumps({"kid": self._newest_kid, **payload}))

    def read_timed(self, purpose: LinkPurpose, token: str, max_age_seconds: int) -> dict[str, Any]:
        payload = self._loads(self._timed(purpose), token, max_age=max_age_seconds)
        if not isinstance(payload, dict):
            raise BadToken(TokenOutcome.MALFORMED)
        payload.pop("kid", None)
        return payload

    # Header tags: MTAs may fold the case of an address's local part and cap it at 64 octets,
    # so these are short lowercase hex MACs over ids the header carries in clear.
    def tag(self, purpose: LinkPurpose, *ids: int) -> str:
        """A short, case-insensitive proof that we issued ``ids`` for ``purpose``."""
        return self._tag(self._keys[0], purpose, ids)

    def check_tag(self, purpose: LinkPurpose, tag: str, *ids: int) -> bool:
        """Whether ``tag`` is one of ours for ``ids`` under any key in the rotation list."""
        if not isinstance(tag, str) or len(tag) != _TAG_LENGTH:
            return False
        tag = tag.lower()
        return any(hmac.compare_digest(self._tag(k, purpose, ids), tag) for k in self._keys)

    def _tag(self, key: str, purpose: LinkPurpose, ids: Sequence[int]) -> str:
        message = f"dispatcher.{purpose.value}:" + ".".join(str(int(i)) for i in ids)
        digest = self._tag_macs[key].copy()  # HMAC-SHA256 under key, its key state reused
        digest.update(message.encode("ascii"))
        return digest.hexdigest()[:_TAG_LENGTH]

    def _loads(self, serializer: Any, token: str, **kwargs: Any) -> Any:
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_LENGTH:
            raise BadToken(TokenOutcome.MALFORMED)
        try:
            return serializer.loads(token, **kwargs)
        except SignatureExpired:
            raise BadToken(TokenOutcome.EXPIRED, "this link has expired") from None
        except BadSignature as exc:
            raise BadToken(self._why_bad(serializer, exc)) from None
        except (BadData, ValueError, TypeError, UnicodeError):
            raise BadToken(TokenOutcome.MALFORMED) from None

    def _why_bad(self, serializer: Any, exc: BadSignature) -> TokenOutcome:
        """Tell a token signed by a key we do not hold from one whose content was altered."""
        raw = getattr(exc, "payload", None)
        if raw is None:
            return TokenOutcome.MALFORMED
        try:
            payload = serializer.load_payload(raw)
        except (BadData, ValueError, TypeError, UnicodeError):
            return TokenOutcome.MALFORMED
        try:
            kid = payload[1] if isinstance(payload, list) else payload.get("kid")
        except (AttributeError, IndexError, TypeError):
            return TokenOutcome.TAMPERED
        if isinstance(kid, str) and kid not in self._kids:
            return TokenOutcome.UNKNOWN_KEY
        return TokenOutcome.TAMPERED
