"""The firmware's heap budget, measured on real MicroPython (tools/bench/heap.py; `make bench`
prints the figure). A regression guard: the measurement is deterministic, not timed."""

import heap  # tools/bench/heap.py (pytest.ini puts tools/bench on the path)


def test_firmware_heap_after_start_up_and_one_cycle_is_within_the_goal():
    r = heap.measure()
    assert "config" not in r["modules_loaded"]  # main.py unloads the validator after boot
    assert {"app", "hal", "outbox", "ring", "protocol"} <= set(r["modules_loaded"])
    assert r["heap_bytes"] <= heap.GOAL_BYTES, r
    assert r["heap_bytes"] < r["reference_py_heap_bytes"]  # .mpy is what make flash installs, and it is smaller
