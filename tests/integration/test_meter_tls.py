"""The real meter firmware (in the emulator, with CPython's ssl) over TLS against a real
Mosquitto TLS listener and the real gateway, with the files `aquafog meter provision --tls-*`
wrote next to each meter's config.json, as `make flash` puts them on the board.

- over mutual TLS, readings arrive and are acknowledged (stored) at the gateway;
- a meter that trusts another CA never connects and keeps its readings; with the
  right CA (and a reset, as a re-flash does) it delivers every one of them;
- a meter whose clock was never set does not connect until NTP answers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aquafog.store.engine import open_engine
from aquafog.store.schema import meters, readings
from integration import test_tls
from integration.test_tls import WAIT, TlsFog, gateway

pki = test_tls.pki  # the development CA fixture of test_tls (module scope)

pytestmark = pytest.mark.integration


@pytest.fixture
def mtls_fog(pki):
    """A fog whose broker wants a client certificate; meters ta, tb, tc provisioned for it
    (each its own certificate; tb and tc the broker's name as the certificate has it)."""
    root = Path(tempfile.mkdtemp(prefix="aquafog-metertls-"))  # not tmp_path: Mosquitto reads the files
    os.chmod(root, 0o711)
    f = TlsFog(root, pki, require_certificate=True)
    tls = ["--tls-client-certs", str(pki / "ca"), "--broker-port", str(f.tls.port)]
    f.provision("ta", "tb", *tls, "--tls-hostname", "localhost")
    f.provision("tc", *tls)
    f.account("gateway", "--password-out", str(root / "gateway.toml"))
    f.broker.start()
    yield f
    f.broker.stop()
    shutil.rmtree(root)


def stored(db) -> dict[str, set]:
    """(boot index, seq) of every reading in the gateway's store, by meter."""
    engine = open_engine(db, create=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(meters.c.meter, readings.c.boot_idx, readings.c.seq)
                                .join(readings, readings.c.meter_pk == meters.c.pk)).all()
    finally:
        engine.dispose()
    out: dict[str, set] = {}
    for m, b, s in rows:
        out.setdefault(m, set()).add((b, s))
    return out


def test_meters_over_mutual_tls_the_wrong_ca_and_the_clock_rule(mtls_fog, pki):
    from emulator import Fleet

    fog = mtls_fog
    ids = ["ta", "tb", "tc"]
    cfgs = {m: fog.config(m) for m in ids}
    assert all(cfgs[m]["mqtt_tls"] and cfgs[m]["mqtt_certfile"] == "client.crt" for m in ids)

    def board_files(m):
        files = {p.name: p for p in (fog.meters_dir / m).iterdir() if p.name != "config.json"}
        if m == "tb":
            files["ca.crt"] = pki / "rogue" / "ca.crt"  # it trusts someone else's CA
        return files

    tls_keys = ("mqtt_tls", "mqtt_cafile", "mqtt_certfile", "mqtt_keyfile", "mqtt_tls_hostname")
    gw = gateway(fog, "gw", mqtt_cafile=str(pki / "ca" / "ca.crt"),
                 mqtt_certfile=str(pki / "ca" / "clients" / "gateway.crt"),
                 mqtt_keyfile=str(pki / "ca" / "clients" / "gateway.key"))
    fleet = Fleet("127.0.0.1", fog.tls.port, ids, seed=2, speed=60.0, report_interval_s=60,
                  start_epoch=time.time() - 600, fs_root=fog.root / "flash",
                  mqtt_password=lambda m: cfgs[m]["mqtt_password"], board_files=board_files,
                  config_overrides={"ring_size": 100})
    for m in ids:  # each its own TLS keys, as provisioned
        fleet.meter(m).cfg.update({k: v for k, v in cfgs[m].items() if k in tls_keys} | {"mqtt_tls_hostname": (
            cfgs[m].get("mqtt_tls_hostname") or "127.0.0.1")})
    ma, mb, mc = (fleet.meter(m) for m in ids)
    mc.ntp_fails = True  # a cold power-on with no NTP: the clock says 2000
    try:
        gw.start()
        fleet.start()
        # ma: over mutual TLS, its readings arrive and are acknowledged (= stored)
        fleet.wait_for(lambda: ma.online and len(ma.sent) >= 3 and ma.outbox_depth == 0, WAIT * 3,
                       "ta online over TLS with acknowledged readings")
        # mb: every handshake fails on the broker's certificate; its readings wait in flash
        fleet.wait_for(lambda: mb.app.stats["connect_failures"] >= 3 and len(mb.app.outbox) >= 3, WAIT * 3,
                       "tb refusing the broker three times")
        assert not mb.online and mb.sent == [] and len(mb.app.outbox.ring) == len(mb.app.outbox)
        # mc: no clock, so no connect at all (its MQTT client was never made), readings kept
        fleet.wait_for(lambda: mc.app.clock_wait and len(mc.app.outbox) >= 3, WAIT * 3, "tc waiting for its clock")
        assert mc.client is None and mc.app.stats["clock_waits"] == 1 and mc.app.clock.state() == "unset"
        assert "tb" not in stored(fog.db) and "tc" not in stored(fog.db)

        # fixed: mb gets the right CA (a re-flash, which resets the board); NTP answers for mc
        shutil.copyfile(pki / "ca" / "ca.crt", mb.fs_dir / "ca.crt")
        kept_mb = [(e[0], e[1]) for e in mb.app.outbox.entries()]
        kept_mc = [(e[0], e[1]) for e in mc.app.outbox.entries()]
        mb.reboot()
        mc.ntp_fails = False
        fleet.quiesce(WAIT * 6)
        assert not fleet.errors
        for m, kept in ((mb, kept_mb), (mc, kept_mc)):
            sent = {(r["boot"], r["seq"]) for r in m.sent}
            assert set(kept) <= sent, (m.id, sorted(set(kept) - sent))
            assert all(r["ts"] > 1577836800 for r in m.sent)  # stamped once the clock was set
        held = stored(fog.db)
        truth = fleet.ground_truth()
        for m in (ma, mb, mc):
            assert len(held[m.id]) == len({(r["boot"], r["seq"]) for r in m.sent}), m.id
            assert m.sent[-1]["ml"] == truth[m.id]["ml"]
        assert mc.app.stats["clock_waits"] == 1 and not mc.app.clock_wait and mc.app.clock.state() == "ntp"
    finally:
        fleet.stop()
        gw.stop()
