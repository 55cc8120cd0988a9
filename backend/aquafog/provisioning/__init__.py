"""Provisioning: a meter's identity (id, MQTT password, config.json), its registration
at the gateway, and its place in Mosquitto's password and ACL files; the broker accounts
of services (a fog's gateway, the cloud, each fog's bridge on the cloud broker).

`aquafog meter provision`, `aquafog broker-account add` and `aquafog tls` are the
commands (aquafog/cli/field.py); this package is the logic, one job per module:

| module | job |
|---|---|
| `identity` | meter and account names, id lists (`--count`, a file), passwords |
| `site` | the site file (TOML or JSON) merged with flags, every key with its default |
| `meterconfig` | a meter's config.json, checked by the firmware's own validator |
| `metertls` | a meter's MQTT over TLS: its config.json keys and certificate files |
| `acl` | the Mosquitto ACL file: the meter patterns, the service accounts' blocks, their roles |
| `mosquitto` | the one module that runs `mosquitto_passwd` and makes Mosquitto reload |
| `files` | private (0600) and broker-readable files, written atomically |
| `tls` | a development CA and certificates for MQTT over TLS |
| `provisioner` | plans every check first, then changes the files in a safe order |
"""

from __future__ import annotations


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
