#!/bin/sh
# Installs the Debian packages AquaFog needs, only those that are missing.
# Used by `make deps` (and so by `make run` and `make test`).
set -eu

missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v mosquitto_sub >/dev/null 2>&1 || missing="$missing mosquitto-clients"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
# Node.js runs real MicroPython (the WebAssembly port from npm) in the firmware tests.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
# PostgreSQL's initdb and pg_ctl: the tests start a throw-away cluster with them. Debian
# keeps them off PATH, in /usr/lib/postgresql/<version>/bin (pg_config alone comes with
# libpq-dev, so its --bindir is only trusted when initdb is really there).
have_pg_server() {
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
    bindir=$(pg_config --bindir 2>/dev/null) || bindir=""
    [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] && return 0
    for bindir in /usr/lib/postgresql/*/bin; do
        [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] && return 0
    done
    return 1
}
have_pg_server || missing="$missing postgresql"
# Headless Chromium and its WebDriver: the browser tests (tests/e2e/) drive them through
# Selenium, with the system chromedriver (never a driver downloaded at run time).
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"

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
# The Debian package may start a system-wide broker on port 1883; AquaFog runs its own
# brokers on free ports and does not need it. Likewise the postgresql package may create
# and start a system cluster on port 5432; the tests run their own on free ports.
