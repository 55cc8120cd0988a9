"""Gateway configuration: sources in order, every error at once (unit)."""

import pytest

from aquafog.config import ConfigError, GatewayConfig


def test_defaults_are_valid():
    assert GatewayConfig().validate() == []


def test_file_then_environment_then_overrides(tmp_path):
    f = tmp_path / "gw.toml"
    f.write_text('mqtt_port = 1884\nhttp_port = 9000\ntimezone = "Europe/Lisbon"\n')
    cfg = GatewayConfig.load(f, env={"AQUAFOG_HTTP_PORT": "9001"}, overrides={"mqtt_host": "10.0.0.2"})
    assert (cfg.mqtt_port, cfg.http_port, cfg.timezone, cfg.mqtt_host) == (1884, 9001, "Europe/Lisbon", "10.0.0.2")


def test_every_error_is_reported_at_once_naming_key_and_range(tmp_path):
    f = tmp_path / "gw.toml"
    f.write_text('mqtt_port = 70000\nbatch_max_delay_ms = 0\ntimezone = "Mars/Olympus"\nmqtt_prot = 1\n'
                 'topic_root = "a/#"\n')
    with pytest.raises(ConfigError) as exc:
        GatewayConfig.load(f, env={"AQUAFOG_HTTP_PORT": "eighty"})
    errors = exc.value.errors
    assert len(errors) == 6, errors
    text = "\n".join(errors)
    assert "mqtt_prot: unknown key" in text
    assert "http_port: must be an integer, got 'eighty'" in text
    assert "mqtt_port: must be between 1 and 65535, got 70000" in text
    assert "batch_max_delay_ms: must be between 1 and 10000" in text
    assert "timezone: unknown time zone 'Mars/Olympus'" in text
    assert "topic_root:" in text


def test_a_missing_or_broken_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        GatewayConfig.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("mqtt_port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        GatewayConfig.load(bad)
