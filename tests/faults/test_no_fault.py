"""The control row of the fault table: the same rig with no fault injected. If this one
does not add up, the ledger is wrong, not the gateway."""

from __future__ import annotations

import pytest

from emulator import meter_ids

from .ledger import tally

pytestmark = pytest.mark.integration


def test_no_fault_every_litre_is_persisted(gateway_factory, make_fleet, fault_table):
    ids = meter_ids(8, "nf")
    gw = gateway_factory(meters=ids).start()
    fleet = make_fleet(ids, speed=300.0, seed=11)
    t0 = fleet.clock.start_epoch
    fleet.start()
    fleet.wait_until(t0 + 30 * 60, timeout=30)
    fleet.quiesce(timeout=30, freeze=True)
    t = fault_table(tally("none (control)", fleet, gw.db_path))
    assert fleet.errors == []
    assert t.ok, t
    assert t.sent >= 8 * 30 and t.truth_ml > 0
