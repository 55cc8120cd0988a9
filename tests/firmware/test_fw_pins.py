"""The firmware's default pins match hardware/pins.json, and the table avoids pins the
ESP32 cannot spare (unit)."""

import json
from pathlib import Path

import pytest

from aquameter import config as fw_config

PINS = json.loads((Path(__file__).parents[2] / "hardware" / "pins.json").read_text())
SIGNALS = PINS["pins"]
AVOID = PINS["avoid"]
REQUIRED = {name: pin for name, pin in SIGNALS.items() if not pin["optional"]}
OPTIONAL = {name: pin for name, pin in SIGNALS.items() if pin["optional"]}


def test_table_lists_the_meter_signals():
    assert set(REQUIRED) == {"pulse", "relay"}
    assert set(OPTIONAL) == {"valve_feedback"}
    for name, pin in SIGNALS.items():
        assert pin["mode"] in ("input", "output"), name
        assert isinstance(pin["gpio"], int) and not isinstance(pin["gpio"], bool), name


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_pin_is_the_firmware_default(name):
    pin = REQUIRED[name]
    assert fw_config.DEFAULTS[pin["config_key"]] == pin["gpio"]


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_optional_pin_is_off_in_the_firmware_and_its_recommended_gpio_is_usable(name):
    pin = OPTIONAL[name]
    assert pin["config_key"] in fw_config.DEFAULTS, "firmware has no %s key" % pin["config_key"]
    assert fw_config.DEFAULTS[pin["config_key"]] is None  # not fitted unless configured
    assert pin["gpio"] in PINS["header_gpios"]


def test_defaults_validate():
    cfg, errors = fw_config.validate({"meter_id": "m1", "wifi_ssid": "x", "broker_host": "h"})
    assert errors == []
    for pin in REQUIRED.values():
        assert cfg[pin["config_key"]] == pin["gpio"]


def test_polarity_defaults_match_the_table():
    relay = SIGNALS["relay"]
    assert fw_config.DEFAULTS[relay["active_high_key"]] is relay["active_high"] is True
    fb = SIGNALS["valve_feedback"]
    assert fw_config.DEFAULTS[fb["closed_level_key"]] == fb["closed_level"] == 0


def pin_problems(table):
    """Every rule the table must keep, as "<signal>: <problem>" strings."""
    avoid, problems, seen = table["avoid"], [], {}
    for name, pin in table["pins"].items():
        gpio = pin["gpio"]
        if gpio not in table["header_gpios"]:
            problems.append("%s: GPIO%d is not on the DevKitC header" % (name, gpio))
        if gpio in seen:
            problems.append("%s: GPIO%d already used by %s" % (name, gpio, seen[gpio]))
        seen[gpio] = name
        for group in ("strapping", "flash", "uart0"):
            if gpio in avoid[group]:
                problems.append("%s: GPIO%d is a %s pin" % (name, gpio, group))
        if gpio in avoid["input_only"]:
            if pin["mode"] == "output":
                problems.append("%s: GPIO%d is input-only" % (name, gpio))
            elif pin["needs_pull_up"] and not pin["external_pull_up"]:
                problems.append("%s: GPIO%d has no internal pull-up; list an external one"
                                % (name, gpio))
    return problems


def test_table_keeps_every_rule():
    assert pin_problems(PINS) == []


def test_relay_is_an_output():
    assert SIGNALS["relay"]["mode"] == "output"


def _with(name, **changes):
    table = json.loads(json.dumps(PINS))
    table["pins"][name].update(changes)
    return table


@pytest.mark.parametrize("name, changes, problem", [
    ("relay", {"gpio": 5}, "relay: GPIO5 is a strapping pin"),
    ("pulse", {"gpio": 7}, "pulse: GPIO7 is a flash pin"),
    ("valve_feedback", {"gpio": 3}, "valve_feedback: GPIO3 is a uart0 pin"),
    ("valve_feedback", {"gpio": 26}, "valve_feedback: GPIO26 already used by relay"),
    ("relay", {"gpio": 34}, "relay: GPIO34 is input-only"),
    ("pulse", {"gpio": 35, "external_pull_up": None},
     "pulse: GPIO35 has no internal pull-up; list an external one"),
    ("pulse", {"gpio": 37}, "pulse: GPIO37 is not on the DevKitC header"),
])
def test_rules_catch_a_bad_table(name, changes, problem):
    assert problem in pin_problems(_with(name, **changes))


def test_input_only_pin_with_an_external_pull_up_is_allowed():
    assert pin_problems(_with("pulse", gpio=35)) == []


def test_avoid_lists_are_the_esp32s():
    # kept as data for other readers; the values themselves are checked here once
    assert AVOID["strapping"] == [0, 2, 5, 12, 15]
    assert AVOID["flash"] == [6, 7, 8, 9, 10, 11]
    assert AVOID["input_only"] == [34, 35, 36, 37, 38, 39]
    assert AVOID["uart0"] == [1, 3]
