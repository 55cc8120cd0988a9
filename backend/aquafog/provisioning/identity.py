"""Names and secrets: meter ids (the MQTT API rule), lists of ids, passwords."""

from __future__ import annotations

import math
import re
import secrets
import string
from pathlib import Path

from . import ProvisionError

# The MQTT API (docs/mqtt-api.md): 1-32 of a-z 0-9 _ -, starting with a letter or digit. The same rule
# as aquafog.protocol.METER_ID_RE and aquameter.config.valid_meter_id (a test checks all
# three agree). Service account names follow it too: a name is a Mosquitto user name,
# and meters and services share that namespace.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
NAME_RULE = "1-32 characters of a-z 0-9 _ -, starting with a letter or digit"

# Letters and digits only: safe unquoted in JSON, TOML, a shell and mosquitto_passwd's
# argument list, and easy to read aloud. 32 of 62 symbols = 190 bits.
PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32
MIN_PASSWORD_BITS = 128


def password_bits(length: int = PASSWORD_LENGTH) -> float:
    return length * math.log2(len(PASSWORD_ALPHABET))


def new_password() -> str:
    """A fresh random password from the OS's CSPRNG; never a default."""
    assert password_bits() >= MIN_PASSWORD_BITS
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def name_problems(names, what: str = "meter id") -> list[str]:
    """One line per invalid or repeated name."""
    problems, seen = [], set()
    for n in names:
        if not isinstance(n, str) or not NAME_RE.fullmatch(n):
            problems.append(f"{what} {n!r}: must be {NAME_RULE}")
        elif n in seen:
            problems.append(f"{what} {n!r}: given more than once")
        seen.add(n)
    return problems


def sequence(count: int, prefix: str = "m", start: int = 1, width: int | None = None) -> list[str]:
    """prefix + a zero-padded number: m0001, m0002, ... (the emulator's names)."""
    if count < 1:
        raise ProvisionError(f"--count must be at least 1, got {count}")
    if start < 0:
        raise ProvisionError(f"--start must be 0 or more, got {start}")
    width = width or max(4, len(str(start + count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(start, start + count)]


def read_ids_file(path: str | Path) -> list[str]:
    """One id per line; blank lines and # comments are ignored."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ProvisionError(f"cannot read the id file {path}: {exc.strerror}",
                             hint="give a text file with one meter id per line") from None
    ids = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line)
    return ids
