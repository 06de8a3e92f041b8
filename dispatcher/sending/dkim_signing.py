"""DKIM signatures on outgoing mail (dkimpy), when a private key is configured.

The signature covers the headers RFC 8058 one-click needs signed (List-Unsubscribe and
List-Unsubscribe-Post) besides the usual From, To, Subject, Date and Message-ID.
"""

from __future__ import annotations

from pathlib import Path

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)


class DkimError(ValueError):
    """The DKIM key cannot be used; the message names the setting."""


class DkimSigner:
    def __init__(self, key_file: str, selector: str, domain: str) -> None:
        try:
            self.key = Path(key_file).read_bytes()
        except OSError as exc:
            raise DkimError(f"dkim_key_file {key_file!r} cannot be read: {exc.strerror}") from None
        if not selector or not domain:
            raise DkimError("dkim_selector and a domain (dkim_domain or the sender's) are needed")
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("ascii")

    def sign(self, message: bytes) -> bytes:
        """``message`` with its DKIM-Signature header prepended."""
        # Imported here, where a key is configured: dkimpy and dnspython are ~2.5 MB of every
        # worker process that signs nothing.
        import dkim

        signature = dkim.sign(
            message,
            self.selector,
            self.domain,
            self.key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        return bytes(signature) + message
