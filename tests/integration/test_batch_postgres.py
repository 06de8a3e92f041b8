"""The batch's claim and outcome statements on PostgreSQL. The outcome updates take the rows'
ids there as one array parameter (``id = ANY(:ids)``), SQLite as an IN list; the unit tests,
and the mutation run that uses them, see only SQLite. The unit tests of the claim and of the
recording of outcomes run here again on PostgreSQL, each on a database of its own (they
commit).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import make_engine, make_sessionmaker, upgrade
from tests.conftest import settings_for
from tests.support.backends import postgres_database, require
from tests.unit.dispatcher.campaigns.test_claim import (  # noqa: F401 - collected again
    test_a_claim_starts_a_fresh_lease_even_on_a_row_renewed_by_an_earlier_claim,
    test_a_claim_takes_only_its_own_campaigns_rows_in_its_own_range,
    test_a_second_claim_of_the_same_batch_takes_nothing,
    test_claim_takes_eligible_rows_and_marks_the_rest_with_their_reason,
    test_paused_campaign_claims_nothing,
    test_rows_left_sending_by_a_dead_execution_become_unknown_not_resent,
    test_service_notice_ignores_opt_out_but_not_postal_request,
    test_the_gates_reasons_are_added_to_the_counts_the_caller_gives,
)
from tests.unit.dispatcher.sending.test_batch import (  # noqa: F401 - collected again
    send,
    test_a_batch_is_sent_to_the_eligible_rows_only,
    test_a_failure_is_not_written_over_an_outcome_another_execution_gave_the_row,
    test_a_relay_closing_the_connection_puts_the_rest_of_the_batch_back,
    test_recording_touches_only_rows_this_execution_still_holds,
    to_sink,
)


@pytest.fixture
def session_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """The unit tests' fixture, on a new PostgreSQL database migrated with Alembic."""
    require("postgresql")
    with postgres_database() as url:
        upgrade(settings_for(tmp_path / "pg", database_url=url))
        engine = make_engine(url)
        try:
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()
