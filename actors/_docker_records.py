"""Records from the Docker engine's raw JSON, and JSON from our records.

The Docker adapter's edge: engine answers become `ContainerInfo` (and the
string maps inside them), a `ContainerSpec` becomes the engine's create
body. Plain dict work, no engine calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..hooks_protocol._errors import EngineError
from ._runtime import LABEL_PREFIX, ContainerInfo, ContainerSpec, ContainerState


def _str_dict(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}

    return {str(k): str(v) for k, v in value.items()}


def _own_labels(labels: Mapping[str, str]) -> dict[str, str]:
    prefix = LABEL_PREFIX + "."
    return {k: v for k, v in labels.items() if k.startswith(prefix)}


def _label_filters(labels: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in sorted(labels.items())]


def _container_config(spec: ContainerSpec) -> dict[str, Any]:
    hosts = ["127.0.0.1"]
    if spec.peer_address is not None:
        hosts.append(spec.peer_address)

    ports = {
        f"{port}/tcp": [{"HostIp": host, "HostPort": ""} for host in hosts]
        for port in spec.published_ports
    }
    host: dict[str, Any] = {
        # docker-init as pid 1 reaps what hooks leave behind.
        "Init": True,
        # Restarts are the supervisor's decision, never the engine's.
        "RestartPolicy": {"Name": "no"},
        "Mounts": [
            {"Type": "volume", "Source": name, "Target": path}
            for name, path in sorted(spec.volumes.items())
        ],
        "PortBindings": ports,
    }
    config: dict[str, Any] = {
        "Image": spec.image,
        "Labels": dict(spec.labels),
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "ExposedPorts": {port: {} for port in ports},
        "HostConfig": host,
    }
    if spec.command is not None:
        config["Cmd"] = list(spec.command)

    if spec.memory_limit is not None:
        host["Memory"] = spec.memory_limit
        # Equal to Memory: no swap on top, so the limit is the limit.
        host["MemorySwap"] = spec.memory_limit

    if spec.network is not None:
        host["NetworkMode"] = spec.network
        endpoint = {"Aliases": list(spec.network_aliases)}
        config["NetworkingConfig"] = {"EndpointsConfig": {spec.network: endpoint}}

    return config


def _state(value: object) -> ContainerState:
    try:
        return ContainerState(str(value))
    except ValueError as exc:
        raise EngineError(
            f"the engine reported an unknown container state: {value!r}"
        ) from exc


def _container_info(raw: Mapping[str, Any]) -> ContainerInfo:
    state = raw.get("State") or {}
    config = raw.get("Config") or {}
    status = _state(state.get("Status"))

    ran = status in (ContainerState.EXITED, ContainerState.DEAD)
    code = state.get("ExitCode")
    return ContainerInfo(
        id=str(raw["Id"]),
        name=str(raw.get("Name") or "").lstrip("/"),
        image=str(config.get("Image") or raw.get("Image") or ""),
        labels=_str_dict(config.get("Labels")),
        state=status,
        exit_code=code if ran and isinstance(code, int) else None,
        oom_killed=bool(state.get("OOMKilled")),
        host_ports=_host_ports((raw.get("NetworkSettings") or {}).get("Ports")),
        peer_ports=_host_ports(
            (raw.get("NetworkSettings") or {}).get("Ports"), peer=True
        ),
    )


def _summary_info(summary: Mapping[str, Any]) -> ContainerInfo:
    """A container as a listing describes it: no exit code or OOM flag,
    which only an inspect gives. Used when the inspect does not answer."""
    names = summary.get("Names") or [""]
    status = _state(summary.get("State"))

    published, peer = {}, {}
    for port in summary.get("Ports") or ():
        if port.get("Type") != "tcp" or not port.get("PublicPort"):
            continue

        if port.get("IP") == "127.0.0.1":
            published[int(port["PrivatePort"])] = int(port["PublicPort"])
        elif port.get("IP") not in _ANY_ADDRESS:
            peer[int(port["PrivatePort"])] = int(port["PublicPort"])

    return ContainerInfo(
        id=str(summary["Id"]),
        name=str(names[0]).lstrip("/"),
        image=str(summary.get("Image") or ""),
        labels=_str_dict(summary.get("Labels")),
        state=status,
        host_ports=published,
        peer_ports=peer,
    )


# Bindings on every address: rolecall never asks for them.
_ANY_ADDRESS = frozenset({None, "", "0.0.0.0", "::"})  # noqa: S104  (matched, not bound)


def _host_ports(ports: object, *, peer: bool = False) -> dict[int, int]:
    """Container TCP port -> its port published on 127.0.0.1, or with
    ``peer`` on the one other address rolecall publishes on (the engine's
    peer address)."""
    if not isinstance(ports, Mapping):
        return {}

    published = {}
    for key, bindings in ports.items():
        port, _, protocol = str(key).partition("/")
        if protocol != "tcp" or not bindings:
            continue
        for binding in bindings:
            address = binding.get("HostIp")
            wanted = (
                address not in _ANY_ADDRESS and address != "127.0.0.1"
                if peer
                else address == "127.0.0.1"
            )
            if wanted and binding.get("HostPort"):
                published[int(port)] = int(binding["HostPort"])

    return published
