"""Provisioned meters: `<meters_dir>/<id>/config.json` and the files it names, as `make flash` reads them.

load(meters_dir, ids) returns each meter's config.json (as written: the Fleet applies its
own overrides) and the TLS files it names, checked the way `make flash` checks them before
a board is touched: the file is a JSON object the firmware's validator accepts, its
meter_id is its folder's name, and with mqtt_tls every file it names (mqtt_cafile,
mqtt_certfile, mqtt_keyfile) is next to it and PEM. Every problem is reported at once, one
line each, naming the meter and the file (MetersDirError).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aquameter import config as fw_config

CONFIG_NAME = "config.json"
TLS_FILE_KEYS = ("mqtt_cafile", "mqtt_certfile", "mqtt_keyfile")


class MetersDirError(ValueError):
    """What keeps the meters of a folder from running: `problems`, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class ProvisionedMeter:
    id: str
    config: dict  # config.json as the provisioning tool wrote it
    files: dict[str, Path]  # what `make flash` copies next to config.json: {name on the board: file}


def _config_problems(meter_id: str, path: Path) -> tuple[dict | None, list[str]]:
    where = "meter %s: %s" % (meter_id, path)
    if not path.is_file():
        return None, ["%s: missing (provision the meter, or leave it out of --ids)" % where]
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return None, ["%s: cannot read it (%s)" % (where, getattr(e, "strerror", None) or e)]
    except ValueError as e:
        return None, ["%s: not valid JSON (%s)" % (where, e)]
    cfg, errors = fw_config.validate(raw)
    if errors:  # the firmware would refuse to start with it
        return None, ["%s: the firmware rejects it: %s" % (where, "; ".join(errors))]
    if raw["meter_id"] != meter_id:
        return None, ["%s: meter_id is %r, but the folder is %r (one folder per meter, named by its id)"
                      % (where, raw["meter_id"], meter_id)]
    problems = []
    files = {}
    if cfg["mqtt_tls"]:
        for key in TLS_FILE_KEYS:
            name = cfg[key]
            if name is None:
                continue
            p = path.parent / name
            if not p.is_file():
                problems.append("meter %s: %s: missing (config.json names it as %s for MQTT over TLS)"
                                % (meter_id, p, key))
                continue
            try:
                head = p.read_bytes()[:4096]
            except OSError as e:
                problems.append("meter %s: %s: cannot read it (%s)" % (meter_id, p, e.strerror))
                continue
            if b"-----BEGIN " not in head:
                problems.append("meter %s: %s: not a PEM file (config.json names it as %s)" % (meter_id, p, key))
            files[name] = p
    return (None if problems else {"raw": raw, "files": files}), problems


def load(meters_dir: str | Path, ids: list[str] | None = None) -> list[ProvisionedMeter]:
    """The meters under `meters_dir` (every folder holding a config.json, in name order), or
    only `ids` (each must be there); MetersDirError lists every problem found."""
    root = Path(meters_dir)
    if not root.is_dir():
        raise MetersDirError(["%s: not a folder (give the provisioning tool's meters_dir, which holds "
                              "<id>/config.json per meter)" % root])
    if ids is None:
        ids = sorted(p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file())
        if not ids:
            raise MetersDirError(["%s: no meters (no <id>/%s in it)" % (root, CONFIG_NAME)])
    out, problems = [], []
    for mid in ids:
        if not fw_config.valid_meter_id(mid):
            problems.append("meter %r: not a meter id (1-32 of a-z 0-9 _ -, starting with a letter or digit)" % mid)
            continue
        got, errors = _config_problems(mid, root / mid / CONFIG_NAME)
        problems += errors
        if got is not None:
            out.append(ProvisionedMeter(mid, got["raw"], got["files"]))
    if problems:
        raise MetersDirError(problems)
    return out
