#!/usr/bin/env bash
# Prepares a Debian-like machine for the demo and the tests: system packages,
# a virtual environment with rolecall installed from this checkout, and a
# running Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv}
extras=${EXTRAS:-test,demo,bench}

# debootstrap builds the example images' base without an image registry;
# the tests' second engine needs openssl (its certificates) and ip (its bridge).
scripts/apt-install.sh debootstrap ca-certificates openssl iproute2

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "rolecall needs Python 3.11 or newer as '$python'; set PYTHON=..." >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        # Debian's Python ships venv separately.
        rm -rf "$venv"
        scripts/apt-install.sh python3-venv
        "$python" -m venv "$venv"
    fi
fi

"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
"$venv/bin/python" -m pip install --quiet -e ".[$extras]"

scripts/ensure-docker.sh
