"""An app on the test's own migrated SQLite file, and one contact with a campaign queued."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import create_deliveries
from dispatcher.db import session_scope
from dispatcher.models import Campaign
from dispatcher.settings import Settings
from dispatcher.web import create_app
from suppression.models import ConsentStatus
from tests.factories import make_contact
from tests.unit.dispatcher.web.pages import ADDRESS


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    app.extensions["dispatcher.hits"].close()  # its page views written, its thread ended


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def contact_id(session_factory: sessionmaker[Session]) -> int:
    """Ann, opted in to marketing and affiliates, with a queued delivery of campaign 1."""
    with session_scope(session_factory) as session:
        contact = make_contact(session, ADDRESS, affiliates=ConsentStatus.OPTED_IN)
        campaign = Campaign(
            name="December news",
            subject="s",
            template="new-releases",
            purpose="marketing",
            status="sending",
        )
        session.add(campaign)
        session.flush()
        create_deliveries(session, campaign)
        return contact.address_id
