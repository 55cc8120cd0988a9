"""Draw the AquaFog meter schematic as SVG, with the GPIO numbers taken from pins.json.

    python hardware/schematic.py            # writes hardware/schematic.svg
    python hardware/schematic.py -o x.svg   # writes elsewhere
    python hardware/schematic.py --check    # exit 1 if hardware/schematic.svg is stale

Part references (J1, F1, R1, ...) are those of the bill of materials in README.md.
Sections are joined by net labels (+12V, +5V, +3V3, ground), as on any multi-sheet
schematic; the three signal paths into the ESP32 are drawn as wires.
"""

import argparse
import json
import sys
from pathlib import Path

import schemdraw
import schemdraw.elements as elm

HERE = Path(__file__).resolve().parent
PINS_JSON = HERE / "pins.json"
SVG_OUT = HERE / "schematic.svg"



def _renderer():
    """What the exact bytes depend on: schemdraw's version, and ziamath (if installed,
    schemdraw measures text with it, which moves every label a little)."""
    from schemdraw.backends import svg as svg_backend

    zm = getattr(svg_backend, "ziamath", None)
    return "schemdraw %s%s" % (schemdraw.__version__,
                               " + ziamath %s" % zm.__version__ if zm is not None else "")


# Recorded in the SVG, so a test knows whether to expect the same bytes.
STAMP = "drawn by hardware/schematic.py from hardware/pins.json with %s" % _renderer()

FONT = 11  # points, all labels
NOTE_FONT = 10
LINE = 0.38  # drawing units between lines of the notes


def gpio_label(pin):
    """The name a signal's pin has in the drawing, e.g. GPIO4."""
    return "GPIO%d" % pin["gpio"]


def _flag(at, net):
    """A supply net label (a bar with the net's name) whose wire starts at `at`."""
    return elm.Vdd().at(at).label(net, fontsize=FONT)


def _gnd(at):
    return elm.Ground().at(at)


def _text(at, text, size=NOTE_FONT, halign="left"):
    """Free text, vertically centred on `at`, starting (halign left) or ending there."""
    return elm.Element().at(at).label(text, loc="center", halign=halign, valign="center",
                                      fontsize=size)


def _dashed_box(x1, y1, x2, y2, title):
    """A dashed frame around optional parts, titled at its top-left corner."""
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    for a, b in zip(corners, corners[1:]):
        elm.Line().at(a).to(b).linestyle("--").linewidth(0.8)
    _text((x1 + 0.4, y1 - 0.7), title, size=NOTE_FONT)


def _esp32(pins):
    """U1, the DevKitC, showing only the pins the meter uses; its pulse pin is at (0, 0)."""
    pulse, relay, fb = pins["pulse"], pins["relay"], pins["valve_feedback"]

    def pin(sig, side, pos, key):
        return elm.IcPin(name=gpio_label(sig), pin=sig["config_key"], side=side, pos=pos,
                         anchorname=key)

    u1 = elm.Ic(
        pins=[
            elm.IcPin(name="5V", side="top", pos=0.25, anchorname="v5"),
            elm.IcPin(name="3V3", side="top", pos=0.6, anchorname="v33"),
            pin(pulse, "left", 0.85, "pulse"),
            pin(fb, "left", 0.15, "fb"),
            pin(relay, "right", 0.5, "relay"),
            elm.IcPin(name="GND", side="bottom", pos=0.5, anchorname="gnd"),
        ],
        size=(5.5, 10),
        leadlen=1.5,
        lofst=0.3,
        plblsize=FONT - 1,
        lsize=FONT,
    ).right().anchor("pulse").at((0, 0))
    u1.label("U1\nESP32-DevKitC V4\n(ESP32-WROOM-32E)", loc="center", fontsize=FONT + 1,
             ofst=(0, -1.6))
    _flag(u1.v5, "+5V")
    _flag(u1.v33, "+3V3")
    _gnd(u1.gnd)
    return u1


def _input_chain(start, r_series, c_filter, r_pullup, esd, terminal):
    """Pin <- C to GND <- series R <- pull-up to +3V3 <- ESD clamp <- terminal; returns
    the terminal's position. Drawn leftwards from the GPIO pin's lead end `start`."""
    elm.Line().at(start).left().length(2)
    n_filter = elm.Dot()
    elm.Capacitor().down().length(2).label(c_filter, loc="top", fontsize=FONT)
    elm.Ground()
    elm.Resistor().at(n_filter.end).left().length(2.5).label(r_series, fontsize=FONT)
    n_pullup = elm.Dot()
    elm.Resistor().up().length(2).label(r_pullup, loc="bottom", fontsize=FONT)
    elm.Vdd().label("+3V3", fontsize=FONT)
    elm.Line().at(n_pullup.end).left().length(2.2)
    n_esd = elm.Dot()
    elm.DiodeTVS().down().length(2).label(esd, loc="bottom", fontsize=FONT)
    elm.Ground()
    elm.Line().at(n_esd.end).left().length(1.5)
    t = elm.Dot(open=True).label(terminal, loc="top", fontsize=FONT)
    return t.end


def _pulse_input(u1):
    """J2: YF-S201 (or a reed meter) -> D3, R1, R2/C2 -> GPIO pulse."""
    sig = _input_chain(u1.pulse, "R2  10 kΩ", "C2\n100 nF reed\n1 nF YF-S201", "R1\n10 kΩ",
                       "D3 ESD\nSMAJ5.0CA", "J2-2 SIG")
    x, y = sig
    elm.Dot(open=True).at((x, y + 1.5)).label("J2-1 +5V", loc="top", fontsize=FONT)
    elm.Line().right().length(1.2)
    elm.Vdd().label("+5V", fontsize=FONT)
    elm.Dot(open=True).at((x, y - 1.5)).label("J2-3 GND", loc="top", fontsize=FONT)
    elm.Line().right().length(0.8)
    elm.Ground()

    # off-board: the YF-S201's three wires, or a reed meter's two
    xs = x - 5.5
    yf = elm.Ic(
        pins=[
            elm.IcPin(name="red +5V", side="right", slot="3/3", anchorname="red"),
            elm.IcPin(name="yellow OUT", side="right", slot="2/3", anchorname="yellow"),
            elm.IcPin(name="black GND", side="right", slot="1/3", anchorname="black"),
        ],
        pinspacing=1.5,
        edgepadH=0.6,
        size=(2.6, 4.2),
        leadlen=0.3,
        plblsize=FONT - 1,
    ).right().anchor("yellow").at((xs, y))
    yf.label("YF-S201 flow sensor\n(Hall, open collector)", loc="top", fontsize=FONT)
    elm.Line().at(yf.red).to((x, y + 1.5))
    elm.Line().at(yf.yellow).to((x, y))
    elm.Line().at(yf.black).to((x, y - 1.5))
    xr = x - 1.6
    elm.Dot().at((xr, y))
    elm.SwitchReed().down().length(1.5).linestyle("--")
    elm.Dot().at((xr, y - 1.5))
    _text((xr - 0.6, y - 0.75), "or S2:\nreed\nmeter", size=FONT - 1, halign="right")


def _feedback_input(u1, fb_key):
    """J4: valve limit switch S1 (optional) -> D4, R5, R6/C3 -> GPIO valve_feedback."""
    fb = _input_chain(u1.fb, "R6  10 kΩ", "C3\n100 nF", "R5\n2.2 kΩ", "D4 ESD\nSMAJ5.0CA",
                      "J4-1 FB")
    x, y = fb
    elm.Dot(open=True).at((x, y - 1.5)).label("J4-2 GND", loc="top", fontsize=FONT)
    elm.Line().right().length(0.8)
    elm.Ground()
    xs = x - 2.2
    elm.Line().at((x, y)).to((xs, y))
    s1 = elm.Switch().at((xs, y)).down().length(1.5)
    elm.Line().at(s1.end).to((x, y - 1.5))
    _text((xs - 0.5, y - 0.75), "S1 valve limit\nswitch: closes\nwhen the valve\nis closed",
          halign="right")
    _dashed_box(xs - 4, y + 3.3, u1.fb[0] - 1, y - 2.9,
                "optional: valve position feedback (%s, default null)" % fb_key)


def _valve_driver(u1):
    """GPIO relay -> R3 -> Q1 low-side switch; R4 holds it off at boot; D2 flyback; Y1 valve."""
    elm.Line().at(u1.relay).right().length(0.6)
    elm.Resistor().right().length(2.5).label("R3  100 Ω", fontsize=FONT)
    n_gate = elm.Dot()
    elm.Resistor().down().length(2.5).label("R4\n100 kΩ", loc="bottom", fontsize=FONT)
    elm.Ground()
    elm.Line().at(n_gate.end).right().length(1)
    q1 = elm.NFet().right().reverse().anchor("gate")
    _text((q1.center[0] + 0.4, q1.center[1]), "Q1\nAO3400A\n(IRLZ44N)")
    _gnd(elm.Line().at(q1.source).down().length(0.5).end)
    elm.Line().at(q1.drain).up().length(1)
    n_drain = elm.Dot()
    elm.Diode().up().length(2.5).label("D2\n1N4007\n(flyback)", loc="bottom", fontsize=FONT)
    n_12v = elm.Dot()
    _flag(elm.Line().up().length(0.6).end, "+12V")
    elm.Line().at(n_12v.end).right().length(3.2)
    j3p = elm.Dot(open=True).label("J3-1 V+", loc="top", fontsize=FONT)
    elm.Line().at(n_drain.end).right().length(3.2)
    j3n = elm.Dot(open=True).label("J3-2 V−", loc="top", fontsize=FONT)
    elm.Line().at(j3p.end).right().length(1.2)
    coil = elm.Inductor2(loops=3).down().toy(j3n.end[1])
    elm.Line().tox(j3n.end[0])
    _text((coil.center[0] + 0.9, coil.center[1]),
          "Y1 valve coil\n12 V DC solenoid,\nnormally open,\n~0.5 A")
    return q1


def _power(x, y):
    """J1 12 V input, F1 fuse, D1 TVS, C1 bulk capacitor, U2 buck converter to +5V."""
    elm.Dot(open=True).at((x, y)).label("J1-1\n+12 V in", loc="left", fontsize=FONT)
    elm.Fuse().right().length(2.5).label("F1  1 A T", fontsize=FONT)
    elm.Line().right().length(1)
    n12 = elm.Dot()
    _flag(n12.end, "+12V")
    elm.Line().right().length(1.8)
    n_tvs = elm.Dot()
    elm.Zener().down().length(2.5).reverse().label("D1\nSMBJ15A\n(TVS)", loc="bottom",
                                                   fontsize=FONT)
    elm.Ground()
    elm.Line().at(n_tvs.end).right().length(2.5)
    n_cap = elm.Dot()
    elm.Capacitor(polar=True).down().length(2.5).label("C1\n100 µF\n25 V", loc="bottom",
                                                       fontsize=FONT, ofst=(0, 0.25))
    elm.Ground()
    elm.Line().at(n_cap.end).right().length(1.5)
    buck = elm.Ic(
        pins=[
            elm.IcPin(name="IN+", side="left", pos=0.75, anchorname="inp"),
            elm.IcPin(name="IN−", side="left", pos=0.25, anchorname="inn"),
            elm.IcPin(name="OUT+", side="right", pos=0.75, anchorname="outp"),
            elm.IcPin(name="OUT−", side="right", pos=0.25, anchorname="outn"),
        ],
        size=(3.2, 2.4),
        leadlen=0.5,
        plblsize=FONT,
    ).right().anchor("inp")
    buck.label("U2  buck module\n12 V → 5.0 V\nMP1584EN / LM2596", loc="top", fontsize=FONT)
    _gnd(elm.Line().at(buck.inn).down().length(0.5).end)
    _gnd(elm.Line().at(buck.outn).down().length(0.5).end)
    elm.Line().at(buck.outp).right().length(1.2)
    _flag(elm.Dot().end, "+5V")
    elm.Dot(open=True).at((x, y - 2)).label("J1-2\n0 V", loc="left", fontsize=FONT)
    elm.Line().right().length(1)
    _gnd(elm.Dot().end)


def _notes(pins, at):
    """The numbered notes a builder reads first."""
    relay = gpio_label(pins["relay"])
    notes = [
        "GPIO numbers are drawn from hardware/pins.json, the firmware's defaults.",
        "Fit ONE flow sensor on J2: YF-S201 (C2 = 1 nF) or a reed-output meter\n"
        "(C2 = 100 nF, and set pulse_min_gap_ms, e.g. 20, in config.json).",
        "%s high = Q1 on = valve energised = CLOSED: a normally-open valve\n"
        "fails OPEN on power loss. R4 holds Q1 off while the ESP32 boots." % relay,
        "Relay-module option, replacing R3, Q1 and the J3 wiring: IN to %s (keep R4),\n"
        "VCC, GND; COM to +12V, NO to valve +, valve − to GND; D2 across the valve." % relay,
        "Valve current returns to J1-2 on its own wire (star ground at J1-2).",
        "U1's 3V3 pin is the DevKitC's regulator output: it feeds R1 and R5 only.",
        "Set U2 to 5.0 V with a meter BEFORE connecting U1.",
    ]
    x, y = at
    _text((x, y), "NOTES", size=NOTE_FONT + 1)
    y -= 0.1
    for n, note in enumerate(notes, 1):
        for i, line in enumerate(note.split("\n")):
            y -= LINE
            if i == 0:
                _text((x, y), "%d." % n, size=NOTE_FONT)
            _text((x + 0.45, y), line, size=NOTE_FONT)


def _sheet(x1, y1, x2, y2):
    """Sheet frame with a title block in the bottom-right corner."""
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    for a, b in zip(corners, corners[1:]):
        elm.Line().at(a).to(b).linewidth(1)
    tx, ty = x2 - 12.5, y2 + 2.2
    elm.Line().at((tx, y2)).to((tx, ty)).linewidth(1)
    elm.Line().at((tx, ty)).to((x2, ty)).linewidth(1)
    _text((tx + 0.3, ty - 0.55), "AquaFog water meter: main board", size=FONT + 2)
    _text((tx + 0.3, ty - 1.15), "drawn by hardware/schematic.py from hardware/pins.json",
          size=NOTE_FONT)
    _text((tx + 0.3, ty - 1.6), "edit those and re-run it; do not edit this SVG by hand",
          size=NOTE_FONT)


def render(pins):
    """Return the schematic as SVG text."""
    schemdraw.use("svg")
    schemdraw.svgconfig.text = "text"  # <text> elements: searchable, and no font package needed
    with schemdraw.Drawing(show=False) as d:
        d.config(unit=2.5, fontsize=FONT, font="DejaVu Sans, Arial, sans-serif", lw=1.4,
                 margin=1)
        u1 = _esp32(pins["pins"])
        _pulse_input(u1)
        _feedback_input(u1, pins["pins"]["valve_feedback"]["config_key"])
        _valve_driver(u1)
        _power(-14, 7.5)
        _notes(pins["pins"], (11.5, 9))
        _sheet(-19, 11, 26, -12)
    svg = d.get_imagedata("svg").decode()
    head, sep, body = svg.partition(">")  # after the opening <svg ...> tag
    return head + sep + "<!-- %s -->" % STAMP + body


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=SVG_OUT, help="SVG file to write")
    ap.add_argument("--pins", type=Path, default=PINS_JSON, help="pin table to draw from")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if the output file differs from a fresh render")
    args = ap.parse_args(argv)
    svg = render(json.loads(args.pins.read_text(encoding="utf-8")))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != svg:
            print("%s: stale, run: python hardware/schematic.py" % args.output, file=sys.stderr)
            return 1
        return 0
    args.output.write_text(svg, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
