"""Fresh Debian 12 roots, built with mmdebstrap, for booting with systemd-nspawn.

`build_root(dest, arch, include, download_only)` makes a minbase bookworm root with
`include` installed and `download_only` (with their dependencies and recommends) lying in
/var/cache/apt/archives, apt's package lists kept: `apt install ./x.deb` then works with
no network, as on a gateway that has the .deb but no Internet.

A built root is a read-only base: each container.Container runs on an overlay of it, so
one build serves every test of the session. AQUAFOG_ROOT_CACHE=/some/dir keeps built roots
there between runs, keyed by their inputs (delete the folder to get fresh packages).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .tools import require_tools

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# ca-certificates is left out: its scripts take a minute under qemu (add it when needed).
# what a fresh Raspberry Pi OS Lite has that matters here (sudo: the guides write it)
BASE_INCLUDE = ("systemd", "systemd-sysv", "dbus", "python3", "iproute2", "sudo")
# What the AquaFog package depends on: the roots hold them for an offline install.
DOWNLOAD_ONLY = ("mosquitto", "mosquitto-clients", "python3-venv", "libpq5", "procps")
HOSTNAME = "aquafog"
MARKER = ".aquafog-root-complete"  # written last: a root without it is unfinished

# Units that prompt on the console, or that would run apt or dpkg behind a test's back
# (apt-daily could take the dpkg lock in the middle of a test's apt install).
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "fstrim.timer", "systemd-firstboot.service", "console-getty.service", "getty@tty1.service",
)

# Under qemu-user, systemd 252 fails to set up any unit's credentials ("Failed to set up
# credentials: Invalid argument"), so the units asking for optional ones (tmpfiles,
# sysusers, sysctl) fail. Drop-ins take those requests away.
_QEMU_CREDENTIALS = r"""
for f in $(grep -l -E '^(Load|Set)Credential' "$root"/lib/systemd/system/*.service); do
    d="$root/etc/systemd/system/$(basename "$f").d"
    mkdir -p "$d"
    printf '[Service]\nLoadCredential=\nSetCredential=\n' > "$d/qemu-no-credentials.conf"
done
"""

# Run by mmdebstrap in the customize phase, with the host's apt on the new root (quick
# for a foreign architecture too: nothing here runs under qemu).
_CUSTOMIZE = r"""
set -eu
root="$1"
echo {hostname} > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 {hostname}\n::1 localhost\n' > "$root/etc/hosts"
# systemd initialises an empty machine-id from the container's UUID at the first boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# No password: the tests get in with nsenter, nothing ever prompts.
sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"
for u in {masked}; do ln -sf /dev/null "$root/etc/systemd/system/$u"; done
rm -f "$root/etc/resolv.conf"
{qemu}# Keep only what a test will install offline: the installed packages' .debs go.
APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get clean
if [ -n "{download_only}" ]; then
    # Recommends as apt inside the root will want them (mmdebstrap's own apt turns them off).
    APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get install --download-only --yes -q \
        -o APT::Install-Recommends=true {download_only}
fi
"""


def build_root(dest: Path | str, arch: str = "amd64", include=BASE_INCLUDE,
               download_only=(), log: Path | None = None) -> Path:
    """Build a root in `dest` and return its path (a cache entry's when the cache is on).

    Raises RuntimeError with mmdebstrap's output when the build fails."""
    require_tools("mmdebstrap", "apt-get")
    if arch != host_arch():
        require_foreign_arch(arch)
    script = _CUSTOMIZE.format(hostname=HOSTNAME, masked=" ".join(MASKED_UNITS),
                               download_only=" ".join(download_only),
                               qemu=_QEMU_CREDENTIALS if arch != host_arch() else "")
    options = ["--mode=root", "--variant=minbase", f"--arch={arch}",
               # No fsync per file: a root that a crash would spoil is simply built again.
               "--dpkgopt=force-unsafe-io",
               # Merged /usr by symlinks, as debootstrap and Debian's images do; the usrmerge
               # package's conversion costs seconds under qemu.
               "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
               "--include=" + ",".join(include),
               # apt's lists and the downloaded .debs are what makes offline installs work.
               "--skip=cleanup/apt",
               "--customize-hook=" + script]
    cache = os.environ.get("AQUAFOG_ROOT_CACHE")
    if cache:
        key = hashlib.sha256(json.dumps([options, SUITE, MIRROR]).encode()).hexdigest()[:16]
        dest = Path(cache) / f"{SUITE}-{arch}-{key}"
        if (dest / MARKER).exists():
            return dest
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["mmdebstrap", *options, SUITE, str(tmp), MIRROR]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log:
        log.write_text(p.stdout)
    if p.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"mmdebstrap failed (exit {p.returncode}) building a {arch} root:\n"
                           + p.stdout[-6000:])
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    (dest / MARKER).write_text(json.dumps({
        "arch": arch, "include": list(include), "download_only": list(download_only),
        "seconds": round(time.monotonic() - t0, 1)}))
    return dest


def root_arch(root: Path | str) -> str:
    """The architecture build_root() built `root` for (the host's for other roots)."""
    marker = Path(root) / MARKER
    return json.loads(marker.read_text())["arch"] if marker.exists() else host_arch()


def host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


_QEMU = {"arm64": "aarch64", "armhf": "arm"}


def require_foreign_arch(arch: str) -> None:
    """Make the kernel run `arch` binaries through qemu-user-static (binfmt_misc, flag F so
    the interpreter works inside a chroot or container); fail saying what to install."""
    name = _QEMU.get(arch)
    if name is None:
        raise RuntimeError(f"no qemu mapping for architecture {arch!r}")
    require_tools(f"qemu-{name}-static", "update-binfmts", "arch-test")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=True)
    entry = binfmt / f"qemu-{name}"
    if not entry.exists() or "enabled" not in entry.read_text():
        subprocess.run(["update-binfmts", "--enable", f"qemu-{name}"], check=True,
                       capture_output=True)
    text = entry.read_text()
    flags = next((line.split()[1] for line in text.splitlines() if line.startswith("flags:")), "")
    if "enabled" not in text or "F" not in flags:
        raise RuntimeError(f"{entry} must be enabled with flag F (interpreter loaded by the "
                           f"host, usable in a container), it reads:\n{text}"
                           "install qemu-user-static and binfmt-support")
