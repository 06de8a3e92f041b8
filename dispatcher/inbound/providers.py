"""Events from sending providers: Amazon SES (through SNS) and SendGrid's Event Webhook.

Each request's signature is verified before anything is read from it; a forged or unsigned
request raises :class:`Refused` (the view answers 4xx and records it). A verified event is
turned into a :class:`Report` and applied by :func:`apply.apply_report` under the provider's
event id, so a redelivered event changes nothing more; like a bounce by mail, it changes
something only when it names one of our deliveries with a valid tag (the VERP source or our
Message-ID, which providers echo back).

Adding a provider: a ``verify_…`` that raises :class:`Refused`, and a function from its event
to ``(event id, Report)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from dispatcher.inbound.classify import Kind, Report
from dispatcher.inbound.storable import dedup_key

# Certificates are fetched only from SNS's own hosts, over https.
_SNS_HOST = re.compile(r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^?#]*\.pem$")
_SNS_URL = re.compile(r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/")
MAX_BODY = 1024 * 1024
SENDGRID_MAX_SKEW = 600.0

CertFetcher = Callable[[str], bytes]


class Refused(Exception):
    """A request that is not (provably) from the provider; the message says why."""

    def __init__(self, why: str, status: int = 403) -> None:
        super().__init__(why)
        self.status = status


_cert_cache: dict[str, bytes] = {}


def fetch_certificate(url: str) -> bytes:
    """The SNS signing certificate at ``url`` (checked against SNS's hosts), cached."""
    if url not in _cert_cache:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (https only)
            _cert_cache[url] = response.read(64 * 1024)
    return _cert_cache[url]


# --- Amazon SNS / SES ---------------------------------------------------------------------

_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SNS_FIELDS["UnsubscribeConfirmation"] = _SNS_FIELDS["SubscriptionConfirmation"]


def verify_sns(body: bytes, topics: set[str], fetch: CertFetcher) -> dict[str, Any]:
    """The SNS message in ``body`` once its signature verifies; :class:`Refused` if not."""
    if len(body) > MAX_BODY:
        raise Refused("request too large", 413)
    try:
        message = json.loads(body)
    except ValueError:
        raise Refused("not JSON", 400) from None
    if not isinstance(message, dict):
        raise Refused("not an SNS message", 400)
    kind = message.get("Type")
    if kind not in _SNS_FIELDS:
        raise Refused("not an SNS message type we accept", 400)
    if message.get("TopicArn") not in topics:
        raise Refused("topic not accepted here (sns_topic_arns)")
    url = str(message.get("SigningCertURL", ""))
    if not _SNS_HOST.match(url):
        raise Refused("signing certificate not from an SNS host")
    version = str(message.get("SignatureVersion", ""))
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()  # noqa: S303 (SNS's SignatureVersion 1 is SHA1withRSA)
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise Refused("unknown SNS signature version")
    text = "".join(
        f"{name}\n{message[name]}\n" for name in _SNS_FIELDS[kind] if name in message
    ).encode("utf-8")
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        certificate = x509.load_pem_x509_certificate(fetch(url))
        public = certificate.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise Refused("SNS certificate is not RSA")
        public.verify(signature, text, padding.PKCS1v15(), algorithm)
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused("SNS signature does not verify") from None
    except OSError:
        raise Refused("SNS certificate could not be fetched", 503) from None
    return message


def ses_report(message: dict[str, Any]) -> tuple[str, Report, bytes]:
    """(event key, report, evidence) of a verified SNS notification carrying an SES event."""
    key = dedup_key("sns", str(message.get("MessageId", "")))
    text = str(message.get("Message", ""))
    try:
        event = json.loads(text)
    except ValueError:
        return key, Report(Kind.UNPARSED, why="SES message is not JSON"), text.encode()
    if not isinstance(event, dict):
        return key, Report(Kind.UNPARSED, why="SES message is not an object"), text.encode()
    kind_name = str(event.get("notificationType") or event.get("eventType") or "")
    kind, recipients, why = Kind.NOT_FEEDBACK, [], f"ses {kind_name.lower()}"
    if kind_name == "Bounce":
        bounce = event.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        kind = Kind.HARD_BOUNCE if permanent else Kind.SOFT_BOUNCE
        recipients = [r.get("emailAddress", "") for r in bounce.get("bouncedRecipients", [])]
        why = f"ses bounce {bounce.get('bounceType')}/{bounce.get('bounceSubType')}"
    elif kind_name == "Complaint":
        complaint = event.get("complaint") or {}
        if complaint.get("complaintFeedbackType") != "not-spam":
            kind = Kind.COMPLAINT
            recipients = [
                r.get("emailAddress", "") for r in complaint.get("complainedRecipients", [])
            ]
    return key, Report(kind, tuple(str(r).lower() for r in recipients), why), text.encode()


def sns_confirm_url(message: dict[str, Any]) -> str | None:
    """The SubscribeURL of a verified confirmation request, if it points at SNS."""
    url = str(message.get("SubscribeURL", ""))
    return url if _SNS_URL.match(url) else None


# --- SendGrid Event Webhook ---------------------------------------------------------------


def verify_sendgrid(
    body: bytes, signature: str, timestamp: str, public_key_b64: str, now: float | None = None
) -> list[dict[str, Any]]:
    """The events in ``body`` once SendGrid's ECDSA signature over timestamp + body verifies."""
    if not public_key_b64:
        raise Refused("sendgrid_public_key is not configured", 404)
    if len(body) > MAX_BODY:
        raise Refused("request too large", 413)
    if not signature or not timestamp:
        raise Refused("unsigned request", 401)
    try:
        key = load_der_public_key(base64.b64decode(public_key_b64))
    except (ValueError, binascii.Error):
        raise Refused("sendgrid_public_key is not a base64 DER public key", 500) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Refused("sendgrid_public_key is not an ECDSA key", 500)
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            timestamp.encode() + body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused("SendGrid signature does not verify") from None
    try:
        skew = abs((now or time.time()) - float(timestamp))
    except ValueError:
        raise Refused("bad timestamp", 400) from None
    if skew > SENDGRID_MAX_SKEW:
        raise Refused("timestamp too far from now (replayed?)")
    try:
        events = json.loads(body)
    except ValueError:
        raise Refused("not JSON", 400) from None
    if not isinstance(events, list):
        raise Refused("not a list of events", 400)
    return [e for e in events if isinstance(e, dict)]


def sendgrid_report(event: dict[str, Any]) -> tuple[str, Report, bytes]:
    """(event key, report, evidence) of one verified SendGrid event.

    The key is SendGrid's ``sg_event_id``; an event without one is keyed by a digest of the
    whole event, so a redelivery is still a duplicate while two different events of one
    address (a ``delivered`` then an ``unsubscribe``) are two.
    """
    evidence = json.dumps(event, sort_keys=True).encode()
    event_id = event.get("sg_event_id")
    if event_id:
        key = dedup_key("sendgrid", str(event_id))
    else:
        key = "sendgrid-event-sha256:" + hashlib.sha256(evidence).hexdigest()
    name = str(event.get("event", ""))
    recipients = (str(event.get("email", "")).lower(),) if event.get("email") else ()
    if name == "bounce":
        hard = event.get("type", "bounce") == "bounce"
        kind = Kind.HARD_BOUNCE if hard else Kind.SOFT_BOUNCE
        return key, Report(kind, recipients, f"sendgrid {event.get('type', 'bounce')}"), evidence
    if name == "spamreport":
        return key, Report(Kind.COMPLAINT, recipients, "sendgrid spamreport"), evidence
    if name in ("unsubscribe", "group_unsubscribe"):
        # The person used SendGrid's own unsubscribe link (subscription tracking or an
        # unsubscribe group): the same act as our link, through the one unsubscribe function.
        report = Report(
            Kind.UNSUBSCRIBE,
            recipients,
            f"sendgrid {name}",
            extra={"provider": "sendgrid", "event": name},
        )
        return key, report, evidence
    if name == "group_resubscribe":
        # Only the person may opt back in, and only through our own pages, where the consent
        # is recorded with its proof: a provider's word is not that proof.
        why = "sendgrid group_resubscribe ignored: opting in is done only through our pages"
        return key, Report(Kind.NOT_FEEDBACK, recipients, why), evidence
    return key, Report(Kind.NOT_FEEDBACK, (), f"sendgrid {name}"[:60]), evidence
