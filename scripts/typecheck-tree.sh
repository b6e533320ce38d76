#!/usr/bin/env bash
# Builds build/typecheck/rolecall as a tree of links that mirrors the installed
# layout (rolecall.actors <- actors/, ...), so mypy checks every mapped module.
# mypy does not follow setuptools' default editable import hook, and a regular
# install would hide modules added since; links see both.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
tree="$top/build/typecheck"
rm -rf "$tree"
mkdir -p "$tree/rolecall"
for f in "$top"/rolecall/*; do
    ln -s "$f" "$tree/rolecall/$(basename "$f")"
done
ln -s "$top/actors" "$tree/rolecall/actors"
ln -s "$top/supervisor" "$tree/rolecall/supervisor"
ln -s "$top/hooks_protocol" "$tree/rolecall/hooks_protocol"
ln -s "$top/images" "$tree/rolecall/images"
echo "$tree"
