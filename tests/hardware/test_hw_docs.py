"""hardware/README.md agrees with hardware/pins.json and names every part the schematic
draws (unit)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = (ROOT / "hardware" / "README.md").read_text(encoding="utf-8")
PINS = json.loads((ROOT / "hardware" / "pins.json").read_text())
SVG = (ROOT / "hardware" / "schematic.svg").read_text(encoding="utf-8")

REF = re.compile(r"\b([A-Z]{1,2}\d{1,2})\b")  # R1, C2, Q1, J3, ...


def section(title):
    """The README text from a '## title' heading to the next '## ' heading."""
    start = README.index("\n## %s\n" % title)
    end = README.find("\n## ", start + 1)
    return README[start:end if end >= 0 else None]


def test_pin_table_rows_match_pins_json():
    rows = [line for line in section("Pins").splitlines() if line.startswith("| ")]
    for name, pin in PINS["pins"].items():
        row = [r for r in rows if "`%s`" % pin["config_key"] in r]
        assert len(row) == 1, name
        cells = [c.strip() for c in row[0].strip("|").split("|")]
        assert cells[1].split()[0] == str(pin["gpio"]), (name, cells[1])
        assert ("optional" in cells[0]) == pin["optional"], name


def test_every_drawn_part_is_in_the_bill_of_materials():
    drawn = set(REF.findall(" ".join(re.findall(r">([^<]+)<", SVG))))
    drawn = {r for r in drawn if not r.startswith(("GPIO", "IO"))}
    assert {"U1", "U2", "F1", "D1", "C1", "R1", "R2", "C2", "Q1", "D2", "Y1", "S1"} <= drawn
    bom = " ".join(REF.findall(section("Bill of materials")))
    missing = sorted(r for r in drawn if r not in bom.split())
    assert missing == [], "drawn but not in the bill of materials: %s" % missing


def test_sensor_ratings_give_the_pulse_rates():
    # YF-S201 at 30 L/min and 450 pulses/L; a reed meter at 2.5 m3/h and 1 pulse/L
    assert 30 * 450 / 60 == 225 and "225 Hz" in README
    assert round(2500 / 3600, 1) == 0.7 and "0.7 Hz" in README
