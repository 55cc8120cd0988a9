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


def test_a_file_this_user_may_not_read_says_to_use_sudo(tmp_path):
    """An installed fog's gateway.toml is root:aquafog 0640: a user without sudo gets a sentence."""
    import os
    f = tmp_path / "gateway.toml"
    f.write_text('region = "north"\n')
    f.chmod(0)
    if os.geteuid() == 0:  # root reads anything: drop to nobody in a child, as the store's owner helper does
        from aquafog.store.owner import as_owner
        os.chown(tmp_path, 65534, 65534)
        os.chmod(tmp_path, 0o755)
        try:
            msg = as_owner(tmp_path, _load_errors, f)
        finally:
            os.chown(tmp_path, 0, 0)
    else:
        msg = _load_errors(f)
    assert msg == [f"{f}: not readable by this user (an installed fog's is root:aquafog 0640): run the command "
                   "with sudo"]


def _load_errors(path):
    try:
        GatewayConfig.load(path)
    except ConfigError as exc:
        return exc.errors
    return None
