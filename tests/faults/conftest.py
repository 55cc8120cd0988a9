"""The fault-injection suite: real Mosquitto (persistence on), real `aquafog gateway`
processes, emulated meters running the real firmware. Each test injects one fault,
quiesces the fleet, and records a ledger.Tally; the table of all of them is printed at
the end of the run and written to test-artifacts/fault-table.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.gatewayproc import GatewayProcess

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


@pytest.fixture
def gateway_factory(tmp_path, broker):
    made = []

    def make(meters=(), workdir: Path | None = None, **settings) -> GatewayProcess:
        gw = GatewayProcess(workdir or tmp_path / f"gw{len(made)}", broker.port, meters, **settings)
        made.append(gw)
        return gw
    yield make
    for gw in made:
        gw.stop()


@pytest.fixture
def make_fleet(broker, tmp_path):
    from emulator import Fleet

    fleets = []

    def make(ids, **kw):
        kw.setdefault("fs_root", tmp_path / f"fleet{len(fleets)}")
        f = Fleet(broker.host, broker.port, ids, **kw)
        fleets.append(f)
        return f
    yield make
    for f in fleets:
        f.stop()
