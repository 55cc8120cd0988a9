"""AquaFog meter emulator: the real firmware (firmware/aquameter) on CPython.

Importing this package puts the repository's firmware/ on sys.path and registers
stand-in `machine`, `network` and `umqtt.simple` modules, so `aquameter.hal` imports
unchanged; each emulated meter then gets its own stand-in objects injected.
"""

import sys
from pathlib import Path

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
if str(FIRMWARE_DIR) not in sys.path:
    sys.path.insert(0, str(FIRMWARE_DIR))

from .standins import install_modules  # noqa: E402

install_modules()

from .clock import MicroTime, SimClock  # noqa: E402
from .fleet import EmulatedMeter, Fleet, Scheduler, WaterLine, meter_ids  # noqa: E402
from .meters_dir import MetersDirError, ProvisionedMeter  # noqa: E402
from .usage import MeterUsage, Profile, assign_profiles  # noqa: E402

__all__ = ["Fleet", "EmulatedMeter", "Scheduler", "WaterLine", "SimClock", "MicroTime", "MeterUsage",
           "Profile", "assign_profiles", "meter_ids", "MetersDirError", "ProvisionedMeter", "FIRMWARE_DIR"]
