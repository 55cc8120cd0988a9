"""Firmware heap on real MicroPython 1.27 (the WebAssembly port, tools/mpwasm).

Figure: gc.mem_alloc() after main.py's start-up (config validated, Board and Meter
built, the flash ring opened) and one reporting cycle (connect, birth, ack, a reading
published and acknowledged), with the firmware compiled to .mpy exactly as `make flash`
installs it. Garbage is collected before each measurement (tools/bench/heap_probe.py).
Reference, in the same run: the same start-up from the .py sources (what a board
without mpy-cross'd files would hold). Goal: <= 40 KB (issue 3: an ESP32 without PSRAM
has about 100 KB free).

    python tools/bench/heap.py [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import mpwasm  # noqa: E402
from aquafog.flash import compile_firmware  # noqa: E402

GOAL_BYTES = 40 * 1024
PROBE = Path(__file__).resolve().parent / "heap_probe.py"
MAIN = ROOT / "firmware" / "main.py"
FAKE_MACHINE = ROOT / "tests" / "firmware" / "fakemachine.py"  # the machine module's stand-in
_LINE = re.compile(r"^HEAP base=(\d+) cycle=(\d+) free=(\d+) modules=(\S*)$", re.M)


class HeapProbeFailed(RuntimeError):
    pass


def _probe(node: str, firmware_dir: Path) -> dict:
    proc = mpwasm.run(node, firmware_dir, PROBE, MAIN, FAKE_MACHINE)
    m = _LINE.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        raise HeapProbeFailed("the heap probe failed on MicroPython (exit %d):\n%s%s"
                              % (proc.returncode, proc.stdout, proc.stderr))
    return {"baseline_bytes": int(m.group(1)), "heap_bytes": int(m.group(2)), "modules": m.group(4).split(",")}


def measure() -> dict:
    node = mpwasm.ensure()
    with tempfile.TemporaryDirectory(prefix="aquafog-heap-") as tmp:
        mpy = Path(tmp) / "mpy"
        (mpy / "aquameter").mkdir(parents=True)
        compiled = compile_firmware(mpy / "aquameter")
        src = Path(tmp) / "py"
        shutil.copytree(ROOT / "firmware" / "aquameter", src / "aquameter",
                        ignore=shutil.ignore_patterns("__pycache__"))
        mpy_bytes = sum(p.stat().st_size for p in compiled)
        figure = _probe(node, mpy)
        reference = _probe(node, src)
    return {
        "heap_bytes": figure["heap_bytes"],
        "modules_loaded": figure["modules"],
        "mpy_bytes": mpy_bytes,
        "reference_py_heap_bytes": reference["heap_bytes"],
        "ratio_vs_py": round(figure["heap_bytes"] / reference["heap_bytes"], 3),
        "goal_bytes": GOAL_BYTES,
        "ratio_vs_goal": round(figure["heap_bytes"] / GOAL_BYTES, 3),
    }


def row(r: dict) -> str:
    return (f"| firmware heap after start-up + 1 reporting cycle (.mpy) | {r['heap_bytes'] / 1024:.1f} KB | "
            f"from .py sources {r['reference_py_heap_bytes'] / 1024:.1f} KB | {r['ratio_vs_py']:.2f} | "
            f"<= 40 KB (now {r['ratio_vs_goal']:.2f} of it) |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    try:
        r = measure()
    except (mpwasm.MpWasmUnavailable, HeapProbeFailed) as e:
        print("heap bench: %s" % e, file=sys.stderr)
        return 2
    print(json.dumps(r, indent=2) if args.json else row(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
