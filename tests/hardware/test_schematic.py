"""hardware/schematic.py draws a valid SVG from hardware/pins.json, and the committed
hardware/schematic.svg is a fresh render of it (unit)."""

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "hardware" / "schematic.py"
COMMITTED = ROOT / "hardware" / "schematic.svg"
PINS = json.loads((ROOT / "hardware" / "pins.json").read_text())
SVG_NS = "{http://www.w3.org/2000/svg}"

schemdraw = pytest.importorskip("schemdraw")  # a dev dependency (backend[dev])


def render(tmp_path, pins=None):
    """Run the script as a maker would; return the SVG text it wrote."""
    args = [sys.executable, str(SCRIPT), "-o", str(tmp_path / "out.svg")]
    if pins is not None:
        (tmp_path / "pins.json").write_text(json.dumps(pins))
        args += ["--pins", str(tmp_path / "pins.json")]
    subprocess.run(args, check=True, timeout=120)
    return (tmp_path / "out.svg").read_text(encoding="utf-8")


def texts(svg):
    """Every line of text in the drawing, in document order."""
    root = ET.fromstring(svg)
    out = []
    for t in root.iter(SVG_NS + "text"):
        spans = list(t.iter(SVG_NS + "tspan"))
        if spans:
            out.extend(s.text or "" for s in spans)
        else:
            out.append(t.text or "")
    return out


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return render(tmp_path_factory.mktemp("schematic"))


def test_output_is_an_svg_document(fresh):
    root = ET.fromstring(fresh)
    assert root.tag == SVG_NS + "svg"
    assert root.get("viewBox")
    assert len(list(root.iter(SVG_NS + "path"))) + len(list(root.iter(SVG_NS + "polyline"))) > 20


def test_every_signal_is_drawn_with_its_gpio_and_config_key(fresh):
    labels = texts(fresh)
    for name, pin in PINS["pins"].items():
        assert "GPIO%d" % pin["gpio"] in labels, name
        assert pin["config_key"] in labels, name


def test_the_parts_a_maker_needs_are_drawn(fresh):
    words = " ".join(texts(fresh))
    for part in ["ESP32-DevKitC V4", "YF-S201", "reed", "R1", "10 kΩ", "C2", "R2", "Q1",
                 "AO3400A", "D2", "flyback", "Y1", "normally open", "F1", "D1", "SMBJ15A",
                 "U2", "MP1584EN", "S1", "valve limit", "J1-1", "J2-2 SIG", "J3-1 V+", "J4-1 FB"]:
        assert part in words, part


def test_gpio_numbers_come_from_the_pin_table(tmp_path):
    moved = json.loads(json.dumps(PINS))
    moved["pins"]["pulse"]["gpio"] = 13
    moved["pins"]["relay"]["gpio"] = 25
    moved["pins"]["valve_feedback"]["gpio"] = 33
    labels = texts(render(tmp_path, moved))
    assert {"GPIO13", "GPIO25", "GPIO33"} <= set(labels)
    assert not {"GPIO4", "GPIO26", "GPIO27"} & set(labels)
    assert any("GPIO25 high" in line for line in labels)


def stamp(svg):
    """The renderer recorded in the SVG, e.g. 'schemdraw 0.23'."""
    found = re.search(r"<!-- drawn by hardware/schematic.py from hardware/pins.json with (.+?) -->",
                      svg)
    return found.group(1) if found else None


def test_committed_svg_is_a_fresh_render(fresh):
    """Byte for byte when drawn by the same renderer (recorded in the SVG); another
    schemdraw version lays it out a little differently, so then compare what it says."""
    committed = COMMITTED.read_text(encoding="utf-8")
    assert stamp(fresh) and stamp(fresh).startswith("schemdraw " + schemdraw.__version__)
    hint = "hardware/schematic.svg is stale: run python hardware/schematic.py"
    assert stamp(committed), hint
    if stamp(committed) == stamp(fresh):
        assert committed == fresh, hint
    else:
        assert texts(committed) == texts(fresh), hint


def test_check_option_reports_a_stale_file(tmp_path):
    out = tmp_path / "old.svg"
    out.write_text("<svg/>")
    stale = subprocess.run([sys.executable, str(SCRIPT), "--check", "-o", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1 and "stale" in stale.stderr
    render(tmp_path)  # writes tmp_path/out.svg
    current = subprocess.run([sys.executable, str(SCRIPT), "--check", "-o",
                              str(tmp_path / "out.svg")], timeout=120)
    assert current.returncode == 0
