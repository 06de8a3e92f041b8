"""Provider webhooks: SES through SNS (X.509 signature; a locally made certificate served by
an injected fetcher, no network) and SendGrid (ECDSA). Forged or unsigned → 4xx, nothing
changes, recorded; a verified event about our delivery is applied once."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.inbound import returnpath
from dispatcher.models import InboundMessage
from dispatcher.settings import Settings
from dispatcher.web import create_app
from suppression.models import Address, ConsentState, Event, Suppression
from suppression.tokens import TokenSigner
from tests.unit.dispatcher.inbound.test_apply import delivery_of, sent_campaign

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"


def make_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


SNS_KEY, SNS_CERT = make_cert()
SG_KEY = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = base64.b64encode(
    SG_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def sns(message: dict[str, object], key: rsa.RSAPrivateKey = SNS_KEY, **over: str) -> bytes:
    body = {
        "Type": "Notification",
        "MessageId": over.pop("MessageId", "m-1"),
        "TopicArn": TOPIC,
        "Message": json.dumps(message),
        "Timestamp": "2026-12-01T01:00:00.000Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
        **over,
    }
    text = "".join(
        f"{k}\n{body[k]}\n"
        for k in ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
        if k in body
    )
    body.setdefault(
        "Signature",
        base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode(),
    )
    return json.dumps(body).encode()


@pytest.fixture
def app(settings: Settings) -> Flask:
    settings = settings.replace(sns_topic_arns=TOPIC, sendgrid_public_key=SG_PUBLIC)
    app = create_app(settings)
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return SNS_CERT

    app.config["SNS_CERT_FETCHER"] = fetch
    app.config["FETCHED"] = fetched
    return app


@pytest.fixture
def our_message(settings: Settings, session_factory: sessionmaker[Session]) -> dict[str, str]:
    signer = TokenSigner(settings.secret_keys)
    with session_scope(session_factory) as session:
        campaign = sent_campaign(session, "gone@example.org")
        delivery = delivery_of(session, campaign, "gone@example.org")
        return {
            "source": returnpath.verp_address(signer, settings.return_path, delivery.id),
            "message_id": returnpath.message_id(
                signer,
                campaign.id,
                delivery.contact_id,
                "killertracks.com",
                campaign.message_nonce,
            ),
        }


def counts(sessions: sessionmaker[Session]) -> tuple[int, dict[str, int]]:
    with session_scope(sessions) as session:
        suppressed = int(session.scalar(select(func.count()).select_from(Suppression)) or 0)
        outcomes = dict(
            session.execute(
                select(InboundMessage.outcome, func.count()).group_by(InboundMessage.outcome)
            ).all()
        )
    return suppressed, outcomes


def ses_bounce(mail: dict[str, str]) -> dict[str, object]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": "gone@example.org"}],
        },
        "mail": {"source": mail["source"], "commonHeaders": {"messageId": mail["message_id"]}},
    }


def test_a_signed_ses_bounce_about_our_delivery_suppresses_once(
    app: Flask, our_message: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    client = app.test_client()
    body = sns(ses_bounce(our_message))
    assert client.post("/inbound/ses", data=body).status_code == 200
    assert client.post("/inbound/ses", data=body).status_code == 200  # redelivered
    assert counts(session_factory) == (1, {"applied": 1})
    assert set(app.config["FETCHED"]) == {CERT_URL}  # only ever from the SNS host


FORGERIES: dict[str, Callable[[dict[str, str]], bytes]] = {
    "signed by another key": lambda m: sns(ses_bounce(m), key=make_cert()[0]),
    "message altered after signing": lambda m: sns(ses_bounce(m)).replace(
        b"Permanent", b"Transient"
    ),
    "unsigned": lambda m: sns(ses_bounce(m), Signature=""),
    "certificate off SNS's hosts": lambda m: sns(
        ses_bounce(m), SigningCertURL="https://evil.example/sns.eu-west-1.amazonaws.com/x.pem"
    ),
    "foreign topic": lambda m: sns(ses_bounce(m), TopicArn="arn:aws:sns:eu-west-1:666:x"),
    "not JSON": lambda m: b"{nope",
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_forged_ses_events_get_4xx_change_nothing_and_are_recorded(
    app: Flask,
    our_message: dict[str, str],
    session_factory: sessionmaker[Session],
    forgery: str,
) -> None:
    response = app.test_client().post("/inbound/ses", data=FORGERIES[forgery](our_message))
    assert 400 <= response.status_code < 500
    assert counts(session_factory) == (0, {"rejected": 1})


def sendgrid_post(app: Flask, events: list[dict[str, object]], **headers: str):  # type: ignore[no-untyped-def]
    body = json.dumps(events).encode()
    timestamp = headers.pop("timestamp", str(int(time.time())))
    signature = base64.b64encode(
        SG_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()
    sent = {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        **headers,
    }
    return app.test_client().post("/inbound/sendgrid", data=body, headers=sent)


def test_a_signed_sendgrid_spam_report_suppresses_as_complaint(
    app: Flask, our_message: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    event = {
        "email": "gone@example.org",
        "event": "spamreport",
        "sg_event_id": "ev-1",
        "smtp-id": our_message["message_id"],
    }
    assert (
        sendgrid_post(app, [event, {"event": "delivered", "sg_event_id": "ev-2"}]).status_code
        == 200
    )
    assert sendgrid_post(app, [event]).status_code == 200
    assert counts(session_factory) == (1, {"applied": 1, "ignored": 1})


@pytest.mark.parametrize("forgery", ["bad signature", "unsigned", "old timestamp"])
def test_forged_sendgrid_posts_get_4xx_and_change_nothing(
    app: Flask,
    our_message: dict[str, str],
    session_factory: sessionmaker[Session],
    forgery: str,
) -> None:
    event = {
        "email": "gone@example.org",
        "event": "bounce",
        "sg_event_id": "ev-9",
        "smtp-id": our_message["message_id"],
    }
    headers = {
        "bad signature": {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(b"x" * 70).decode()
        },
        "unsigned": {"X-Twilio-Email-Event-Webhook-Signature": ""},
        "old timestamp": {"timestamp": str(int(time.time()) - 3600)},
    }[forgery]
    response = sendgrid_post(app, [event], **headers)
    assert 400 <= response.status_code < 500
    assert counts(session_factory) == (0, {"rejected": 1})


def test_a_signed_subscription_confirmation_is_confirmed_and_a_forged_one_is_not(
    app: Flask,
) -> None:
    visited: list[str] = []
    app.config["SNS_CONFIRMER"] = lambda url: visited.append(url) or b""
    url = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t"
    fields = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "c-1",
        "Token": "t",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe",
        "SubscribeURL": url,
        "Timestamp": "2026-12-01T01:00:00.000Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
    }
    text = "".join(
        f"{k}\n{fields[k]}\n"
        for k in ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
    )
    signature = base64.b64encode(SNS_KEY.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256()))
    forged = {**fields, "SubscribeURL": url.replace("eu-west-1", "us-east-1")}
    client = app.test_client()
    good = client.post("/inbound/ses", data=json.dumps({**fields, "Signature": signature.decode()}))
    bad = client.post("/inbound/ses", data=json.dumps({**forged, "Signature": signature.decode()}))
    assert (good.status_code, bad.status_code) == (200, 403)
    assert visited == [url]


def unsubscribe_state(sessions: sessionmaker[Session], address: str) -> tuple[list[str], str]:
    """(source of each active suppression, marketing consent) of ``address``."""
    with session_scope(sessions) as session:
        found = session.scalars(select(Address).where(Address.address == address)).one()
        sources = list(
            session.scalars(
                select(Suppression.source).where(
                    Suppression.address_id == found.id,
                    Suppression.lifted_at.is_(None),
                    Suppression.reason == "unsubscribe",
                    Suppression.scope == "marketing",
                )
            )
        )
        state = session.get(ConsentState, (found.id, "marketing"))
        return sources, state.status if state else "none"


def test_sendgrid_unsubscribe_event_goes_through_the_one_unsubscribe_function(
    app: Flask, our_message: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    # As SendGrid posts it when the person clicks its subscription-tracking link.
    event = {
        "email": "gone@example.org",
        "timestamp": int(time.time()),
        "smtp-id": our_message["message_id"],
        "event": "unsubscribe",
        "category": ["newsletter"],
        "sg_event_id": "sg-unsub-1",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    }
    assert sendgrid_post(app, [event]).status_code == 200
    assert sendgrid_post(app, [event]).status_code == 200  # redelivered: nothing more

    assert unsubscribe_state(session_factory, "gone@example.org") == (
        ["sendgrid:unsubscribe"],
        "opted_out",
    )
    with session_scope(session_factory) as session:
        row = session.scalars(select(InboundMessage)).one()
        assert (row.kind, row.outcome) == ("unsubscribe", "applied")
        assert row.campaign_id is not None and row.delivery_id is not None
        audited = [
            (e.outcome, e.detail["source"])
            for e in session.scalars(select(Event).where(Event.kind == "unsubscribed"))
        ]
    assert audited == [("suppressed", "sendgrid:unsubscribe")]


def test_sendgrid_group_unsubscribe_without_our_id_applies_to_a_known_contact_only(
    app: Flask, our_message: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    def group(email: str, event_id: str) -> dict[str, object]:
        return {
            "email": email,
            "timestamp": int(time.time()),
            "event": "group_unsubscribe",
            "asm_group_id": 42,
            "useragent": "Mozilla/5.0",
            "ip": "198.51.100.7",
            "url": "https://u123.ct.sendgrid.net/asm/unsubscribe/?user_id=1",
            "sg_event_id": event_id,
            "sg_message_id": "abc.filter0001",
        }

    response = sendgrid_post(
        app, [group("Gone@Example.org", "sg-g-1"), group("stranger@example.net", "sg-g-2")]
    )

    assert response.status_code == 200
    assert unsubscribe_state(session_factory, "gone@example.org") == (
        ["sendgrid:group_unsubscribe"],
        "opted_out",
    )
    assert counts(session_factory) == (1, {"applied": 1, "unmatched": 1})


def test_sendgrid_group_resubscribe_is_recorded_and_opts_nobody_in(
    app: Flask, our_message: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    base = {"email": "gone@example.org", "asm_group_id": 42, "smtp-id": our_message["message_id"]}
    sendgrid_post(app, [{**base, "event": "group_unsubscribe", "sg_event_id": "sg-g-3"}])

    response = sendgrid_post(app, [{**base, "event": "group_resubscribe", "sg_event_id": "sg-r"}])

    assert response.status_code == 200
    assert unsubscribe_state(session_factory, "gone@example.org") == (
        ["sendgrid:group_unsubscribe"],
        "opted_out",
    )
    with session_scope(session_factory) as session:
        row = session.scalars(
            select(InboundMessage).where(InboundMessage.key == "sendgrid:sg-r")
        ).one()
        assert row.outcome == "ignored"
        assert "only through our pages" in row.detail["why"]


def test_a_signed_ses_complaint_suppresses_as_complaint_and_not_spam_changes_nothing(
    app: Flask, our_message: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    def complaint(feedback_type: str) -> dict[str, object]:
        return {
            "notificationType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": "gone@example.org"}],
                "complaintFeedbackType": feedback_type,
                "feedbackId": f"fb-{feedback_type}",
            },
            "mail": {
                "source": our_message["source"],
                "commonHeaders": {"messageId": our_message["message_id"]},
            },
        }

    client = app.test_client()
    assert (
        client.post("/inbound/ses", data=sns(complaint("not-spam"), MessageId="c-0")).status_code
        == 200
    )
    assert counts(session_factory) == (0, {"ignored": 1})
    assert (
        client.post("/inbound/ses", data=sns(complaint("abuse"), MessageId="c-1")).status_code
        == 200
    )
    with session_scope(session_factory) as session:
        reasons = list(session.scalars(select(Suppression.reason)))
    assert reasons == ["complaint"]
