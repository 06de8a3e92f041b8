"""Provider events' keys: each event recorded once, two events never taken for one.
(Signatures and what the events change are checked through the web app in
tests/unit/dispatcher/web/test_providers.py.)"""

from __future__ import annotations

import json

from dispatcher.inbound.providers import sendgrid_report, ses_report


def test_two_sendgrid_events_without_an_event_id_get_different_keys() -> None:
    """Red team: the key was the first 32 bytes of the sorted JSON, '{"email": "<address>"…'
    for every event of an address, so a later bounce or unsubscribe was dropped as a
    duplicate of the first."""
    first = sendgrid_report({"email": "ann@example.com", "event": "delivered", "timestamp": 1})
    later = sendgrid_report({"email": "ann@example.com", "event": "unsubscribe", "timestamp": 2})
    assert first[0] != later[0]


def test_a_redelivered_sendgrid_event_without_an_id_keeps_its_key() -> None:
    event = {"email": "ann@example.com", "event": "bounce", "timestamp": 7, "type": "bounce"}
    key = sendgrid_report(event)[0]
    assert key == sendgrid_report(dict(reversed(list(event.items()))))[0]
    assert key.startswith("sendgrid-event-sha256:") and "ann" not in key


def test_a_sendgrid_event_id_is_the_key_and_stored_safely_whatever_it_holds() -> None:
    assert sendgrid_report({"event": "delivered", "sg_event_id": "ev-1"})[0] == "sendgrid:ev-1"
    odd = sendgrid_report({"event": "delivered", "sg_event_id": "ev\x00" + "x" * 400})[0]
    assert odd.startswith("sendgrid-sha256:") and len(odd) == len("sendgrid-sha256:") + 64


def test_an_sns_message_id_is_the_key() -> None:
    message = {"MessageId": "6a1f3f1e-5d2c-4a4e-9c1b-0d6e9b1c2a3f", "Message": json.dumps({})}
    assert ses_report(message)[0] == "sns:6a1f3f1e-5d2c-4a4e-9c1b-0d6e9b1c2a3f"
