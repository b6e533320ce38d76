#!/usr/bin/env bash
# Installs the named Debian packages that are not installed yet.
set -euo pipefail

missing=()
for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "these Debian packages are missing: ${missing[*]}; install them as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "installing Debian packages: ${missing[*]}"
# A fresh machine has no package lists yet; an old list may miss a version.
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
