"""Classification accuracy over the inbound corpus (tests/data/inbound/expected.json).

    .venv/bin/python bench/inbound_accuracy.py [-v]

Prints, per kind and in total, how many messages got the expected kind, and how many of
those also named exactly the expected recipients.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from dispatcher.inbound.classify import classify

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "inbound"


def main() -> int:
    verbose = "-v" in sys.argv
    expected = json.loads((CORPUS / "expected.json").read_text())
    total: Counter[str] = Counter()
    kind_ok: Counter[str] = Counter()
    both_ok: Counter[str] = Counter()
    started = time.perf_counter()
    for name, want in sorted(expected.items()):
        report = classify((CORPUS / name).read_bytes())
        total[want["kind"]] += 1
        got_recipients = sorted(r.lower() for r in report.recipients)
        want_recipients = sorted(r.lower() for r in want["recipients"])
        if report.kind == want["kind"]:
            kind_ok[want["kind"]] += 1
            if got_recipients == want_recipients or not want_recipients:
                both_ok[want["kind"]] += 1
        if verbose and (report.kind != want["kind"] or got_recipients != want_recipients):
            print(
                f"  {name}: want {want['kind']} {want_recipients}, got "
                f"{report.kind} {got_recipients} ({report.why})"
            )
    elapsed = time.perf_counter() - started
    print(f"{'kind':<14}{'messages':>9}{'kind right':>12}{'+recipients':>13}")
    for kind in sorted(total):
        print(f"{kind:<14}{total[kind]:>9}{kind_ok[kind]:>12}{both_ok[kind]:>13}")
    n = sum(total.values())
    print(f"{'all':<14}{n:>9}{sum(kind_ok.values()):>12}{sum(both_ok.values()):>13}")
    print(
        f"kind accuracy {sum(kind_ok.values()) / n:.1%}, with recipients "
        f"{sum(both_ok.values()) / n:.1%}; {n} messages in {elapsed:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
