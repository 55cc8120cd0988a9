"""Provisioning: a meter's identity (id, MQTT password, config.json), its registration
at the gateway, and its place in Mosquitto's password and ACL files.

`tools/provision.py` is the command; this package is the logic, one job per module:

| module | job |
|---|---|
| `identity` | meter and account names, id lists (`--count`, a file), passwords |
| `site` | the site file (TOML or JSON) merged with flags, every key with its default |
| `meterconfig` | a meter's config.json, checked by the firmware's own validator |
| `acl` | the Mosquitto ACL file: the meter patterns, the service accounts' blocks |
| `mosquitto` | the one module that runs `mosquitto_passwd` and signals Mosquitto |
| `files` | private (0600) and broker-readable files, written atomically |
| `provisioner` | plans every check first, then changes the files in a safe order |
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The backend (registration) and the firmware (its config validator) live in this
# repository; the tool works from a plain checkout, like tools/demo.py.
for _p in (ROOT / "firmware", ROOT / "backend"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


class ProvisionError(Exception):
    """What went wrong, the details (one line each, e.g. every `<key>: <problem>`) and
    what to do next. Raised before the first change unless `done` names what was
    already changed."""

    def __init__(self, message: str, details=(), hint: str = "", done=()):
        self.message = message
        self.details = list(details)
        self.hint = hint
        self.done = list(done)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [self.message] + ["  " + d for d in self.details]
        if self.done:
            lines.append("already done: " + "; ".join(self.done))
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)
