"""Bounce and complaint rates: shown by ``campaign status``, and a campaign past a threshold
pauses itself and says why."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.inbound import returnpath
from dispatcher.inbound.sources import apply_raw
from dispatcher.settings import Settings
from suppression.tokens import TokenSigner
from tests.unit.dispatcher.inbound.test_apply import delivery_of, dsn, sent_campaign
from workers.cli import main


def test_hard_bounces_past_the_threshold_pause_and_campaign_status_says_why(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    env = {
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
        "DISPATCHER_BASE_URL": settings.base_url,
        "DISPATCHER_PAUSE_MIN_SENT": "20",
    }
    settings = settings.replace(pause_min_sent=20)
    signer = TokenSigner(settings.secret_keys)
    addresses = [f"r{i:02d}@example.org" for i in range(20)]
    with session_scope(session_factory) as session:
        campaign = sent_campaign(session, *addresses)
        campaign_id = campaign.id
        verps = [
            returnpath.verp_address(
                signer, settings.return_path, delivery_of(session, campaign, a).id
            )
            for a in addresses
        ]
    # 1 of 20 (5 %) is not over the 5 % default; the second (10 %) is.
    for n, verp in enumerate(verps[:2]):
        apply_raw(session_factory, settings, signer, dsn(verp, "x@y", mid=f"<b{n}@mx>"), source="t")
        result = CliRunner().invoke(main, ["campaign", "status", str(campaign_id)], env=env)
        paused = "paused: hard-bounce rate 10.00% is over 5.00% (2 of 20)" in result.stdout
        assert paused == (n == 1), result.stdout
    assert "hard bounces                   2  (10.00% of sent)" in result.stdout
    assert "soft bounces                   0  (0.00% of sent)" in result.stdout
    assert "complaints                     0  (0.00% of sent)" in result.stdout
