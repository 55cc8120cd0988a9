from aquameter import config

GOOD = {"meter_id": "house-17_b", "wifi_ssid": "lab", "broker_host": "10.0.0.2"}


def test_defaults_filled_and_mqtt_user_is_the_meter_id():
    cfg, errors = config.validate(dict(GOOD))
    assert errors == []
    assert cfg["mqtt_user"] == "house-17_b"
    assert cfg["topic_root"] == "aquafog"
    assert (cfg["pulse_pin"], cfg["relay_pin"], cfg["relay_active_high"]) == (4, 26, True)
    assert cfg["report_interval_s"] == 60 and cfg["ack_timeout_s"] == 120
    assert cfg["outbox_size"] == 16 and cfg["ring_size"] == 2880 and cfg["reconcile_timeout_s"] == 10 and cfg["flow_timeout_s"] == 10
    assert cfg["valve_default"] == "open"
    assert cfg["pulses_per_m3"] == 450_000


def test_every_error_is_reported_at_once_naming_key_and_range():
    bad = {
        "meter_id": "House 17",
        "broker_port": 70000,
        "report_interval_s": 0,
        "k_factor": 0.0001,
        "relay_active_high": "yes",
        "valve_default": "ajar",
        "outbox_size": "many",
        "wifi_password": 5,
        "colour": "blue",
        "_comment": "allowed",
    }
    cfg, errors = config.validate(bad)
    keys = sorted(e.split(":")[0] for e in errors)
    assert keys == sorted([
        "meter_id", "broker_port", "report_interval_s", "k_factor", "relay_active_high", "valve_default",
        "outbox_size", "wifi_password", "colour", "wifi_ssid", "broker_host",
    ])
    text = "\n".join(errors)
    assert "broker_port: must be an integer 1..65535, got 70000" in text
    assert "report_interval_s: must be an integer 1..86400, got 0" in text
    assert "colour: unknown key" in text
    assert "wifi_ssid: required" in text


def test_meter_id_rules():
    for good in ("m", "0", "m0001", "a" * 32, "a-b_c"):
        assert config.valid_meter_id(good), good
    for bad in ("", "-a", "_a", "A1", "a" * 33, "a b", "a/b", "a+", None, 7):
        assert not config.valid_meter_id(bad), bad


def test_k_factor_must_give_at_least_one_pulse_per_m3():
    assert config.validate(dict(GOOD, k_factor=0.001))[1] == []
    assert config.validate(dict(GOOD, k_factor=0.001))[0]["pulses_per_m3"] == 1
    for bad in (0, -1, 0.0004, True, "450"):
        assert [e for e in config.validate(dict(GOOD, k_factor=bad))[1] if e.startswith("k_factor:")], bad


def test_not_an_object():
    assert config.validate([1, 2])[1] == ["config: must be a JSON object"]


def test_example_config_is_valid():
    import json
    import pathlib

    example = pathlib.Path(__file__).resolve().parents[2] / "firmware" / "config.example.json"
    cfg, errors = config.validate(json.loads(example.read_text()))
    assert errors == []


def test_tls_is_off_by_default_and_its_keys_have_defaults():
    cfg, errors = config.validate(dict(GOOD))
    assert errors == []
    assert cfg["mqtt_tls"] is False and cfg["mqtt_cafile"] == "ca.crt"
    assert cfg["mqtt_certfile"] is None and cfg["mqtt_keyfile"] is None
    assert cfg["mqtt_tls_hostname"] == "10.0.0.2"  # the broker's address, as umqtt would check it


def test_tls_with_mutual_certificates_and_another_server_name():
    cfg, errors = config.validate({**GOOD, "mqtt_tls": True, "broker_port": 8883, "mqtt_cafile": "fog-ca.pem",
                                   "mqtt_certfile": "client.crt", "mqtt_keyfile": "client.key",
                                   "mqtt_tls_hostname": "fog1.lan"})
    assert errors == []
    assert (cfg["mqtt_cafile"], cfg["mqtt_certfile"], cfg["mqtt_keyfile"], cfg["mqtt_tls_hostname"]) == (
        "fog-ca.pem", "client.crt", "client.key", "fog1.lan")


def test_tls_errors_name_the_key_and_the_rule():
    _, errors = config.validate({**GOOD, "mqtt_tls": "yes", "mqtt_cafile": "../etc/ca.crt",
                                 "mqtt_certfile": "config.json", "mqtt_tls_hostname": "fog 1"})
    text = "\n".join(errors)
    assert "mqtt_tls: must be true or false" in text
    assert "mqtt_cafile: must be a file name next to config.json on the board" in text and "'../etc/ca.crt'" in text
    assert "mqtt_certfile: must be a file name" in text  # config.json is the board's own
    assert "mqtt_certfile, mqtt_keyfile: mutual TLS needs both" in text
    assert "mqtt_tls_hostname: must be the host name (or IP address) in the broker's certificate" in text
    _, errors = config.validate({**GOOD, "mqtt_tls": True, "mqtt_certfile": "ca.crt", "mqtt_keyfile": ".key"})
    text = "\n".join(errors)
    assert "mqtt_certfile: must differ from the other certificate files, got 'ca.crt'" in text
    assert "mqtt_keyfile: must be a file name" in text


def test_tls_keys_without_mqtt_tls_are_a_mistake_not_silently_plain():
    _, errors = config.validate({**GOOD, "mqtt_certfile": "client.crt", "mqtt_keyfile": "client.key",
                                 "mqtt_tls_hostname": "fog1.lan"})
    assert sorted(e.split(":")[0] for e in errors) == ["mqtt_certfile", "mqtt_keyfile", "mqtt_tls_hostname"]
    assert all("only used with mqtt_tls true" in e for e in errors)


def test_tls_needs_ntp_because_certificate_dates_are_checked():
    _, errors = config.validate({**GOOD, "mqtt_tls": True, "ntp_host": ""})
    assert len(errors) == 1 and errors[0].startswith("ntp_host: must be set with mqtt_tls")
    _, errors = config.validate({**GOOD, "ntp_host": ""})  # plain MQTT: the RTC may do
    assert errors == []
