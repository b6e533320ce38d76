#!/usr/bin/env bash
# Makes sure a Docker engine answers on the local socket.
#
# Installs the engine from Debian's packages when it is missing and starts it
# when none answers. An engine that already answers is used as it is. The
# engine started here keeps running after the script ends (later commands,
# such as `rolecall status`, need it); stop it with `kill $(cat /var/run/docker.pid)`.
set -euo pipefail

log=${ROLECALL_DOCKERD_LOG:-/var/log/rolecall-dockerd.log}

answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "installing the Docker engine (docker.io) from Debian's packages"
    scripts/apt-install.sh docker.io
fi

# A pid file left by an engine that died with its machine stops a new one from
# starting; trust it only when its pid really is a running dockerd.
pidfile=/var/run/docker.pid
if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -z "$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
        rm -f "$pidfile"
    fi
fi

if [ ! -f "$pidfile" ]; then
    echo "starting the Docker engine (log: $log)"
    setsid dockerd --storage-driver=overlay2 >"$log" 2>&1 </dev/null &
fi

for _ in $(seq 120); do
    if answers; then
        exit 0
    fi
    sleep 0.5
done

echo "the Docker engine did not answer within 60s; its log says:" >&2
tail -n 20 "$log" >&2 || true
exit 1
