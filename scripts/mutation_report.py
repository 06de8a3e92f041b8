"""Summarise ``mutmut results --all true``: killed / survived per module, and the survivors
that tests/mutation-equivalents.txt does not explain (exit code 1 if there is any).

The equivalents file lists one mutant per line, ``<mutant name>  # <why it is equivalent>``;
a line without a reason does not count. Blank lines and lines starting with ``#`` are notes.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {"killed", "timeout", "caught by type check"}
SURVIVED = {"survived", "no tests"}
NAME = re.compile(r"^(?P<module>[\w.]+?)\.x(?:_|ǁ)")


def read_results(path: Path) -> dict[str, str]:
    results: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            results[name] = status
    return results


def read_equivalents(path: Path) -> dict[str, str]:
    reasons: dict[str, str] = {}
    if not path.exists():
        return reasons
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, reason = line.partition("#")
        if reason.strip():
            reasons[name.strip()] = reason.strip()
    return reasons


def module_of(name: str) -> str:
    match = NAME.match(name)
    return match["module"] if match else name.rsplit(".", 1)[0]


def main(results_path: str, equivalents_path: str) -> int:
    results = read_results(Path(results_path))
    equivalents = read_equivalents(Path(equivalents_path))
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    unexplained: list[tuple[str, str]] = []
    for name, status in sorted(results.items()):
        counts = per_module[module_of(name)]
        if status in KILLED:
            counts["killed"] += 1
        elif status in SURVIVED and name in equivalents:
            counts["equivalent"] += 1
        elif status in SURVIVED:
            counts["survived"] += 1
            unexplained.append((name, status))
        else:  # not checked, suspicious, segfault, skipped: the run did not decide
            counts["undecided"] += 1
            unexplained.append((name, status))
    print(f"{'module':<36}{'killed':>8}{'survived':>10}{'equivalent':>12}{'undecided':>11}")
    total: Counter[str] = Counter()
    for module in sorted(per_module):
        c = per_module[module]
        total.update(c)
        print(
            f"{module:<36}{c['killed']:>8}{c['survived']:>10}{c['equivalent']:>12}"
            f"{c['undecided']:>11}"
        )
    print(
        f"{'total':<36}{total['killed']:>8}{total['survived']:>10}{total['equivalent']:>12}"
        f"{total['undecided']:>11}"
    )
    stale = sorted(set(equivalents) - {n for n, s in results.items() if s in SURVIVED})
    if stale:
        print(f"\n{len(stale)} listed equivalents no longer survive (remove them):")
        for name in stale:
            print(f"    {name}")
    if unexplained:
        print(f"\n{len(unexplained)} mutants survived without a reason in {equivalents_path}:")
        for name, status in unexplained:
            print(f"    {name}: {status}    (see: .venv/bin/mutmut show {name})")
        return 1
    if not results:
        print("no mutants found: did mutmut run?")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
