"""Which host tools the system tests need, and the Debian package that brings each one."""

from __future__ import annotations

import shutil

PACKAGES = {
    "mmdebstrap": "mmdebstrap",
    "apt-get": "apt",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "update-binfmts": "binfmt-support",
    "qemu-aarch64-static": "qemu-user-static",
    "qemu-arm-static": "qemu-user-static",
    "arch-test": "arch-test",
}


class MissingTool(RuntimeError):
    pass


def require_tools(*names: str) -> None:
    """Raise MissingTool naming the Debian packages to install for the missing `names`."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pkgs = sorted({PACKAGES.get(n, n) for n in missing})
        raise MissingTool(f"missing {', '.join(missing)}: "
                          f"install with `apt-get install {' '.join(pkgs)}`")
