"""The fault-injection suite: real Mosquitto (persistence on), real `aquafog gateway`
processes, emulated meters running the real firmware. Each test injects one fault,
quiesces the fleet, and records a ledger.Tally; the table of all of them is printed at
the end of the run and written to test-artifacts/fault-table.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from .ledger import Tally, render

REPO = Path(__file__).resolve().parents[2]
TABLE_PATH = REPO / "test-artifacts" / "fault-table.md"
_ROWS: list[Tally] = []


@pytest.fixture
def fault_table():
    """Record a fault's tally for the printed table (call it before asserting on it)."""
    def record(t: Tally) -> Tally:
        _ROWS.append(t)
        return t
    return record


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    table = render(_ROWS)
    terminalreporter.write_sep("=", "fault injection: every reading and litre accounted for")
    terminalreporter.write_line(table)
    for r in _ROWS:
        for n in r.notes:
            terminalreporter.write_line(f"  {r.fault}: {n}")
    TABLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    TABLE_PATH.write_text("# Fault injection\n\n" + table + "\n")
