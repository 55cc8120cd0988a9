"""The firmware's default pins match hardware/pins.json and avoid pins the ESP32 cannot
spare (unit)."""

import json
from pathlib import Path

from aquameter import config as fw_config

PINS = json.loads((Path(__file__).parents[2] / "hardware" / "pins.json").read_text())


def test_firmware_defaults_are_the_pin_table():
    cfg, errors = fw_config.validate({"meter_id": "m1", "wifi_ssid": "x", "broker_host": "h"})
    assert errors == []
    for name, pin in PINS["pins"].items():
        assert cfg[pin["config_key"]] == pin["gpio"], name


def test_pins_avoid_strapping_flash_and_input_only_pins():
    avoid = PINS["avoid"]
    for name, pin in PINS["pins"].items():
        assert pin["gpio"] not in avoid["strapping"] + avoid["flash"], name
    assert PINS["pins"]["relay"]["gpio"] not in avoid["input_only"]
