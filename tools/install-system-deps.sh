#!/bin/sh
# Installs the Debian packages a job needs, only those that are missing.
#   install-system-deps.sh run    the demo, provisioning and flashing (make run, make flash, make deb)
#   install-system-deps.sh test   all of the above and what the tests drive (make test, make bench)
set -eu
job=${1:-run}
case "$job" in run|test) ;; *) echo "usage: $0 run|test" >&2; exit 2 ;; esac

missing=""
need() {  # need PACKAGE TEST...: the package unless the test command succeeds
    pkg=$1; shift
    "$@" >/dev/null 2>&1 || missing="$missing $pkg"
}
have() { command -v "$1" || [ -x "$2" ]; }

need mosquitto have mosquitto /usr/sbin/mosquitto
need mosquitto-clients have mosquitto_sub /usr/bin/mosquitto_sub
need python3-venv python3 -c 'import venv, ensurepip'

if [ "$job" = test ]; then
    # Node.js runs real MicroPython (the WebAssembly port from npm) in the firmware tests.
    need nodejs have node /usr/bin/node
    need npm have npm /usr/bin/npm
    # PostgreSQL's initdb and pg_ctl: the tests start a throw-away cluster with them. Debian
    # keeps them off PATH, in /usr/lib/postgresql/<version>/bin.
    need postgresql sh -c 'ls /usr/lib/postgresql/*/bin/initdb'
    # Headless Chromium and its WebDriver: the browser tests (tests/e2e/), with the system
    # chromedriver (never a driver downloaded at run time).
    need chromium have chromium /usr/bin/chromium
    need chromium-driver have chromedriver /usr/bin/chromedriver
    # The install tests (tests/system/): Debian roots built with mmdebstrap, booted with
    # systemd-nspawn, an arm64 one run through qemu-user-static.
    need systemd-container have systemd-nspawn /usr/bin/systemd-nspawn
    need mmdebstrap have mmdebstrap /usr/bin/mmdebstrap
    need qemu-user-static have qemu-aarch64-static /usr/bin/qemu-aarch64-static
    need binfmt-support have update-binfmts /usr/sbin/update-binfmts
    need arch-test have arch-test /usr/bin/arch-test
    need gpg have gpg /usr/bin/gpg
    need iproute2 have ip /sbin/ip
fi

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=sudo
    else
        echo "AquaFog needs these Debian packages:$missing" >&2
        echo "Install them as root, then run make again:" >&2
        echo "    sudo apt-get install -y$missing" >&2
        exit 1
    fi
else
    SUDO=""
fi

echo "Installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The mosquitto package may start a system-wide broker on port 1883; AquaFog's demo and tests
# run their own brokers on free ports and do not need it. Likewise the postgresql package may
# start a cluster on port 5432; the tests run their own on free ports.
