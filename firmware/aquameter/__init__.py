"""AquaFog meter firmware (MicroPython >= 1.26 on ESP32; also runs on CPython in the emulator).

Only aquameter.hal touches the hardware; every other module is plain logic.
"""

VERSION = "0.2.0"
