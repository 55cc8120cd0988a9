"""The cloud service alone against a real Mosquitto, partials published straight on the
cloud broker as the fogs' bridges deliver them: bad ones are rejected by reason and
counted, an older partial never replaces a newer one, and a restarted cloud answers from
its store at once. Once on SQLite, once on a throw-away PostgreSQL."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aquafog.bridge import cloud_summary_topic
from aquafog.broker import LocalBroker, free_port
from aquafog.cloud.service import Cloud
from aquafog.config import CloudConfig
from aquafog.federation import Partial, encode_partial, period_key
from aquafog.periods import Calendar, day_key
from pg import pg_url, postgres_server  # noqa: F401  (fixtures)

from authz import cloud_token

from .httpjson import authorize, forget, get, post, put, wait_for

pytestmark = pytest.mark.integration

TODAY = period_key("day", day_key(Calendar("UTC").today(time.time())))




def partial(region: str, seq: int, top, meters: int = 10, extra_ml: int = 0) -> Partial:
    return Partial(region, "day", TODAY, seq, seq, meters, sum(ml for _, ml in top) + extra_ml, 50, tuple(top))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'cloud.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def cloud_rig(tmp_path, db_url):
    broker = LocalBroker(tmp_path / "broker").start()
    made = []

    def start() -> Cloud:
        c = Cloud(CloudConfig(db_url=db_url, mqtt_port=broker.port, http_port=free_port()))
        authorize(f"http://127.0.0.1:{c.http_port}/", cloud_token(c.engine))
        c.start()
        made.append(c)
        assert c.subscribed.wait(10), "the cloud did not subscribe to the fogs' summaries"
        return c

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fog-bridge-stand-in")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()

    def send(topic: str, payload: bytes) -> None:
        pub.publish(topic, payload, qos=1).wait_for_publish(10)

    yield start, send
    pub.disconnect()
    pub.loop_stop()
    for c in made:
        forget(f"http://127.0.0.1:{c.http_port}/")
        c.stop()
    broker.stop()


def test_bad_partials_are_rejected_and_counted_and_an_old_one_never_wins(cloud_rig):
    start, send = cloud_rig
    cloud = start()
    api = f"http://127.0.0.1:{cloud.http_port}/api/v1"
    topic = cloud_summary_topic("north", "day", TODAY)
    send(topic, encode_partial(partial("north", 10, [("n1", 5000), ("n2", 3000)])))
    bad = [
        (topic, b"not json"),                                                            # not_json
        (topic, encode_partial(partial("south", 11, [("s1", 1)]))),                      # region_mismatch
        (cloud_summary_topic("north", "day", "2020-01-01"),
         encode_partial(partial("north", 12, [("n1", 1)]))),                             # topic_mismatch
        (topic, json.dumps({"v": 1, "region": "north", "period": "day", "key": TODAY, "seq": 13, "ts_ms": 1,
                            "meters": 1, "sum_ml": 9, "k": 5, "top": [["n2", 1], ["n1", 5]]}).encode()),  # order
        ("aquafog-city/fogs/north/summary/day", b"{}"),                                  # bad_topic
    ]
    for t, p in bad:
        send(t, p)
    send(topic, encode_partial(partial("north", 9, [("n9", 99999)])))  # older than seq 10: ignored
    wait_for(lambda: sum(cloud.rejected.values()) == len(bad) and cloud.stale == 1, "every bad partial counted")
    assert dict(cloud.rejected) == {"not_json": 1, "region_mismatch": 1, "topic_mismatch": 1, "bad_field": 1,
                                    "bad_topic": 1}
    status, body = get(f"{api}/city/ranking?n=5")
    assert status == 200 and [(i["meter"], i["litres"]) for i in body["items"]] == [("n1", 5.0), ("n2", 3.0)]
    status, health = get(f"{api}/health")
    assert status == 200 and health["partials"]["rejected"]["not_json"] == 1

    # bad fog info is counted like a bad partial
    send("aquafog-city/fogs/north/summary/info/fog", json.dumps(
        {"v": 1, "region": "north", "api_url": "http://evil/x", "version": "1", "status": "ok", "problems": [],
         "ts_ms": 1}).encode())
    wait_for(lambda: cloud.rejected["bad_field"] == 2, "the bad info counted")
    assert get(f"{api}/fogs")[1]["items"][0]["api_url"] is None
    # the city's policy settings: kept in the store
    status, body = put(f"{api}/policy", {"mode": "enforce", "cap_m3": 30, "exempt": ["n1"]})
    assert status == 200 and body["sent"]

    # a restarted cloud answers from its store before any partial arrives again
    cloud.stop()
    again = start()
    status, body = get(f"http://127.0.0.1:{again.http_port}/api/v1/city/mean")
    assert status == 200 and (body["meters"], body["sum_ml"]) == (10, 8000)
    body = get(f"http://127.0.0.1:{again.http_port}/api/v1/policy")[1]
    assert (body["settings"]["mode"], body["settings"]["cap_m3"], body["settings"]["exempt"]) == ("enforce", 30.0,
                                                                                                  ["n1"])


def test_bad_queries_say_which_parameter_and_why(cloud_rig):
    start, _ = cloud_rig
    cloud = start()
    api = f"http://127.0.0.1:{cloud.http_port}/api/v1"
    for q, field in (("n=0", "n"), ("n=abc", "n"), ("period=week", "period")):
        status, body = get(f"{api}/city/ranking?{q}")
        assert status == 400 and body["error"]["field"] == field, (q, body)
    status, body = get(f"{api}/city/ranking")
    assert status == 200 and body["items"] == [] and body["regions"] == []
    # a valve body is checked as the fog's API checks it, before any routing
    for req, field in (({"state": "ajar"}, "state"), ({}, "state"), ({"state": "open", "reason": "x" * 501}, "reason"),
                       ({"state": "open", "command_id": "local-0badc0de-1"}, "command_id")):
        status, body = post(f"{api}/meters/m1/valve", req)
        assert status == 400 and body["error"]["field"] == field, (req, body)
    status, body = get(f"{api}/city/mean")
    assert status == 200 and body["meters"] == 0 and body["mean_litres"] is None
    for req, field in (({"mode": "always"}, "mode"), ({"caps_m3": {"m1": -1}}, "caps_m3"), ([], "body")):
        status, body = put(f"{api}/policy", req)
        assert status == 400 and body["error"]["field"] == field, (req, body)
    assert get(f"{api}/policy")[1] == {"settings": None, "updated_ms": None, "fogs": []}
    # meter detail for a meter no fog has
    status, body = get(f"{api}/meters/m1")
    assert status == 404 and "directory" in body["error"]["message"]


def test_aquafog_cloud_command_serves_and_stops_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys

    broker = LocalBroker(tmp_path / "broker").start()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aquafog", "cloud", "--db-url", f"sqlite:///{tmp_path / 'c.db'}",
                             "--mqtt-port", str(broker.port), "--http-port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: get_or_none(f"http://127.0.0.1:{port}/api/v1/health") == 200, "the cloud healthy")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        broker.stop()
    assert proc.returncode == 0, out
    assert (tmp_path / "c.db").exists()


def get_or_none(url: str):
    try:
        return get(url)[0]
    except OSError:
        return None
