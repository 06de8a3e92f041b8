from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from dispatcher.sending.throttle import Limits, schedule

NOW = 1_000_000.0


def test_no_limits_means_now_for_everyone(session: Session) -> None:
    assert schedule(session, ["a@x.com", "b@y.com"], Limits(), now=NOW) == [NOW, NOW]


def test_global_rate_spaces_messages_and_continues_across_batches(session: Session) -> None:
    limits = Limits(per_second=10)
    first = schedule(session, [f"r{i}@x.com" for i in range(5)], limits, now=NOW)
    assert first == pytest.approx([NOW + i / 10 for i in range(5)])
    # Another worker's batch, reserved at the same moment, queues behind the first.
    second = schedule(session, ["s@y.com", "t@z.com"], limits, now=NOW)
    assert second == pytest.approx([NOW + 0.5, NOW + 0.6])


def test_idle_time_is_not_saved_up_as_a_burst(session: Session) -> None:
    limits = Limits(per_second=10)
    schedule(session, ["a@x.com"], limits, now=NOW)
    later = schedule(session, ["b@x.com", "c@x.com"], limits, now=NOW + 100)
    assert later == pytest.approx([NOW + 100, NOW + 100.1])


def test_per_domain_rate_holds_while_other_domains_go_freely(session: Session) -> None:
    limits = Limits(per_domain_per_second=2)
    times = schedule(
        session, ["a@slow.com", "b@slow.com", "c@fast.com", "d@slow.com"], limits, now=NOW
    )
    assert times == pytest.approx([NOW, NOW + 0.5, NOW, NOW + 1.0])


def test_both_limits_apply_together(session: Session) -> None:
    limits = Limits(per_second=10, per_domain_per_second=1)
    times = schedule(session, ["a@d.com", "b@d.com", "c@e.com"], limits, now=NOW)
    assert times == pytest.approx([NOW, NOW + 1.0, NOW + 0.2])
