"""Following an install guide (docs/install-fog.md) in a container: its commands, found in
the guide's ```sh blocks by a fragment and run as written (on the Pi: inside; on your
computer: here), and what the tests need around them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from integration.connack import connack

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "install-fog.md"
HOME = "/home/pi"  # where the guide's user keeps the two files
INSTALL = "sudo apt install ./aquafog_*_all.deb ./aquafog-fog_*_all.deb"
RAN: set[str] = set()  # guide commands this session ran
__all__ = ["connack"]  # the MQTT check the tests use, with the rest


def guide_commands(path: Path = GUIDE) -> list[tuple[str, str]]:
    """(where, command) of every ```sh block: where is what the block's first line names
    (`# on the Pi`, `# on your computer (...)`, `# on the server, ...`): "the Pi", "your computer"."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
        lines = block.strip().splitlines()
        m = re.match(r"# on ((?:the|your) [\w ]+?)(?:,| \(|$)", lines[0])
        assert m, f"a command block of {path.name} must say where it runs (# on ...): {lines[0]!r}"
        out += [(m[1], line) for line in lines[1:] if line.strip() and not line.startswith("#")]
    return out


def guide(fragment: str, path: Path = GUIDE) -> str:
    """The guide's command containing `fragment` (it must be there: the test follows the guide)."""
    found = [cmd for _, cmd in guide_commands(path) if fragment in cmd]
    assert found, f"{path.name} has no command with {fragment!r}"
    return found[0]


def on_pi(c, fragment: str, timeout: float = 300, path: Path = GUIDE, **kw):
    """Run the guide's command in the container (the Pi, the server, a fog), in the user's
    folder; a person answers apt's question with Y."""
    cmd = guide(fragment, path)
    RAN.add(cmd)
    return c.run(f"cd {HOME} && {cmd}", timeout=timeout, input="Y\n", **kw)


def on_computer(c, fragment: str, path: Path = GUIDE) -> str:
    cmd = guide(fragment, path)
    RAN.add(cmd)
    cmd_here = cmd.replace("raspberrypi.local", c.ip).replace("cloud.example", c.ip)
    r = subprocess.run(cmd_here, shell=True, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r.stdout


def put_file(c, src: Path, name: str | None = None) -> Path:
    """A file into the user's folder in the container (copied, as on a USB stick)."""
    dest = c.host_path(HOME) / (name or Path(src).name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return dest


def put_debs(c, debs: Path, only=("aquafog", "aquafog-fog")) -> None:
    """Copy the packages to the user's folder in the container (as on a USB stick)."""
    home = c.host_path(HOME)
    home.mkdir(parents=True, exist_ok=True)
    for old in home.glob("*.deb"):
        old.unlink()
    for deb in debs.iterdir():
        if deb.name.split("_")[0] in only:
            shutil.copy2(deb, home / deb.name)


def http(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError:
        return 0, {}


def active(c, unit: str) -> bool:
    return c.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0


def restarted(c, unit: str, old_pid: int, timeout: float, what: str) -> int:
    """Wait until `unit` runs again under a new main PID (and is active); returns it."""
    def new():
        pid = c.main_pid(unit)
        return pid if pid not in (0, old_pid) and active(c, unit) else 0
    return c.wait_for(new, timeout, what)
