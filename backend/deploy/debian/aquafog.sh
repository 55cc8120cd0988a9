#!/bin/sh
# The aquafog command, from the Python environment the aquafog package built at install time.
venv=/opt/aquafog/venv
if [ ! -x "$venv/bin/aquafog" ]; then
    echo "aquafog: its Python environment $venv is missing or broken; rebuild it with" >&2
    echo "    sudo dpkg-reconfigure aquafog" >&2
    exit 1
fi
exec "$venv/bin/aquafog" "$@"
