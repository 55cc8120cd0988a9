"""AquaFog meter firmware (MicroPython >= 1.26 on ESP32; also runs on CPython in the emulator).

Only aquameter.hal touches the hardware; every other module is plain logic.
"""

VERSION = "0.2.0"

try:
    from micropython import const  # the modules take const from here: one fallback, not one each
except ImportError:  # CPython
    def const(x):
        return x
