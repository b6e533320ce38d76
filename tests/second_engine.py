"""A second Docker engine on this machine, for tests that span engines.

`start_second_engine` runs a private ``dockerd`` beside the default one: its
own data root, exec root, pid file, unix socket and bridge (with an address
range no other route on the machine uses, and ``--iptables=false`` so it
leaves the default engine's rules alone), and a TCP listener on 127.0.0.1
that asks for TLS client certificates. The CA, the server certificate (for
IP 127.0.0.1) and the client certificate are made with ``openssl`` for each
start, in the engine's own directory.

Several test sessions may run at once (other worktrees, CI): each takes one
of a few *slots*, claimed by an atomic rename, and a slot's bridge, address
range and port belong to it alone. A slot whose owner process has ended
(a session killed mid-run) is cleaned up before slots are chosen: its
``dockerd`` and managed ``containerd`` are stopped by their pid files, its
mounts released and its bridge deleted. The data root stays, so images
loaded once are there for the next session; containers left in it are
removed when the engine starts.

Run by hand (as root)::

    python3 tests/second_engine.py start   # prints the environment to use
    python3 tests/second_engine.py env     # prints it again
    python3 tests/second_engine.py stop    # stops engines started by hand

``eval "$(python3 tests/second_engine.py env)"`` points the ``docker`` CLI at
it over TLS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from attrs import frozen
from second_engine_certs import make_ca, make_certificates
from second_engine_slots import (
    DATA_BASE,
    MANUAL,
    PORT_BASE,
    RUN_BASE,
    SLOTS,
    SecondEngineError,
    bridge_name,
    children,
    claim_slot,
    clean_stale,
    forwarding,
    process_identity,
    release_slot,
    slot_network,
)

if TYPE_CHECKING:
    from rolecall.actors import EngineConfig

__all__ = [
    "SecondEngine",
    "SecondEngineError",
    "make_ca",
    "process_identity",
    "start_second_engine",
    "stop_second_engine",
]

_START_TIMEOUT = 60.0
_CLI_TIMEOUT = 300


@frozen
class SecondEngine:
    """A running second engine.

    Attributes:
        slot: Which slot it holds.
        url: ``tcp://127.0.0.1:PORT``: the TLS listener.
        socket_url: ``unix://...``: its local socket (no TLS).
        ca: The CA certificate that signed the server's and client's.
        cert: The client certificate.
        key: The client certificate's key.
        peer_address: The bridge's address: where containers of the other
            engine reach ports published on it.
        bridge: The bridge's name.
        directory: Its run directory (certificates, pid file, log).
    """

    slot: int
    url: str
    socket_url: str
    ca: Path
    cert: Path
    key: Path
    peer_address: str
    bridge: str
    directory: Path

    @property
    def pidfile(self) -> Path:
        """The ``dockerd`` pid file."""
        return self.directory / "dockerd.pid"

    def engine_config(self, name: str = "engine2") -> EngineConfig:
        """The `EngineConfig` that reaches it over TLS, as ``name``."""
        # Imported here so that the script runs without rolecall installed.
        from rolecall.actors import EngineConfig, TlsFiles

        tls = TlsFiles(ca=self.ca, cert=self.cert, key=self.key)
        return EngineConfig(
            name=name, url=self.url, tls=tls, peer_address=self.peer_address
        )

    def docker_env(self) -> dict[str, str]:
        """Environment that points the ``docker`` CLI at it over TLS."""
        return {
            "DOCKER_HOST": self.url,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.ca.parent),
        }

    def docker(self, *args: str, timeout: float = _CLI_TIMEOUT) -> str:
        """Run the ``docker`` CLI against it (local socket); its stdout.

        Raises:
            SecondEngineError: The command failed.
        """
        done = subprocess.run(
            ["docker", "-H", self.socket_url, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise SecondEngineError(
                f"docker {' '.join(args)} on the second engine failed: "
                f"{done.stderr.strip()}"
            )

        return done.stdout

    def remove_labelled(self, label: str) -> None:
        """Remove its containers and volumes carrying ``label`` (``k=v``),
        and then its networks carrying it."""
        filters = ("--filter", f"label={label}")
        containers = self.docker("ps", "-aq", *filters).split()
        if containers:
            self.docker("rm", "-f", "-v", *containers)

        for kind in ("volume", "network"):
            for name in self.docker(kind, "ls", "-q", *filters).split():
                self.docker(kind, "rm", name)

    def load_image(self, image: str) -> None:
        """Copy ``image`` from the default engine, unless it is there already.

        Raises:
            SecondEngineError: The save or the load failed.
        """
        with contextlib.suppress(SecondEngineError):
            self.docker("image", "inspect", image)
            return

        with tempfile.TemporaryFile() as archive:
            saved = subprocess.run(
                ["docker", "save", image],
                stdout=archive,
                stderr=subprocess.PIPE,
                check=False,
                timeout=_CLI_TIMEOUT,
            )
            if saved.returncode != 0:
                raise SecondEngineError(
                    f"docker save {image} failed: {saved.stderr.decode().strip()}"
                )

            archive.seek(0)
            loaded = subprocess.run(
                ["docker", "-H", self.socket_url, "load", "-q"],
                stdin=archive,
                capture_output=True,
                check=False,
                timeout=_CLI_TIMEOUT,
            )
        if loaded.returncode != 0:
            raise SecondEngineError(
                f"docker load of {image} failed: {loaded.stderr.decode().strip()}"
            )


# -- start and stop -----------------------------------------------------------


def _engine(slot: int) -> SecondEngine:
    directory = RUN_BASE / f"slot{slot}"
    tls = directory / "tls"
    return SecondEngine(
        slot=slot,
        url=f"tcp://127.0.0.1:{PORT_BASE + slot}",
        socket_url=f"unix://{directory}/docker.sock",
        ca=tls / "ca.pem",
        cert=tls / "cert.pem",
        key=tls / "key.pem",
        peer_address=str(slot_network(slot)[1]),
        bridge=bridge_name(slot),
        directory=directory,
    )


def _addbridge_name(engine: SecondEngine) -> None:
    network = slot_network(engine.slot)
    for command in (
        ["ip", "link", "add", engine.bridge, "type", "bridge"],
        ["ip", "addr", "add", f"{engine.peer_address}/24", "dev", engine.bridge],
        ["ip", "link", "set", engine.bridge, "up"],
    ):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SecondEngineError(
                f"{' '.join(command)} failed: {done.stderr.strip()} (the "
                f"second engine needs root to make its bridge on {network})"
            )


def _dockerd_argv(engine: SecondEngine, data_root: Path) -> list[str]:
    network = slot_network(engine.slot)
    pool = f"base={network.network_address + 128 * 256}/17,size=24"
    server = engine.directory / "tls"
    return [
        "dockerd",
        "--config-file", str(engine.directory / "daemon.json"),
        "--data-root", str(data_root),
        "--exec-root", str(engine.directory / "exec"),
        "--pidfile", str(engine.pidfile),
        "--host", engine.socket_url,
        "--host", engine.url,
        "--tlsverify",
        "--tlscacert", str(engine.ca),
        "--tlscert", str(server / "server-cert.pem"),
        "--tlskey", str(server / "server-key.pem"),
        "--bridge", engine.bridge,
        "--iptables=false",
        "--ip-masq=false",
        "--default-address-pool", pool,
        "--storage-driver=overlay2",
    ]  # fmt: skip


def _wait_until_answers(engine: SecondEngine, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break

        with contextlib.suppress(SecondEngineError, subprocess.TimeoutExpired):
            engine.docker("version", "--format", "{{.Server.Version}}", timeout=5)
            return
        time.sleep(0.2)  # dockerd announces nothing: its API is polled

    log = (RUN_BASE / f"slot{engine.slot}.log").read_text(errors="replace")
    tail = "\n".join(log.splitlines()[-15:])
    raise SecondEngineError(f"the second dockerd did not answer; its log:\n{tail}")


def start_second_engine(owner: str) -> SecondEngine:
    """Start a second engine for ``owner`` (``pid:start-time`` or ``manual``).

    Raises:
        SecondEngineError: It could not start; the slot is released.
    """
    if shutil.which("dockerd") is None or shutil.which("openssl") is None:
        raise SecondEngineError("dockerd and openssl must be on the PATH")

    if os.geteuid() != 0:
        raise SecondEngineError("a second engine needs root (bridge, dockerd)")

    clean_stale()
    engine = _engine(claim_slot(owner))
    try:
        (engine.directory / "daemon.json").write_text("{}\n", encoding="utf-8")
        make_certificates(engine.directory / "tls")
        # A bridge left by a run that died before it wrote its owner file.
        subprocess.run(
            ["ip", "link", "delete", engine.bridge], check=False, capture_output=True
        )
        _addbridge_name(engine)
        forwarding(engine.slot, add=True)
        data_root = DATA_BASE / f"slot{engine.slot}"
        data_root.mkdir(parents=True, exist_ok=True)
        # A dockerd that finds its default network stored from an earlier
        # start, with --default-address-pool set, deletes the host's
        # `docker0` (the default engine's bridge!) while it clears that
        # network. Starting without the stored networks avoids it; the
        # images in the data root stay.
        (data_root / "network/files/local-kv.db").unlink(missing_ok=True)
        with (RUN_BASE / f"slot{engine.slot}.log").open("wb") as log:
            process = subprocess.Popen(
                _dockerd_argv(engine, data_root),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        children[engine.slot] = process
        _wait_until_answers(engine, process)
        # The engine is this session's alone: what an earlier one left goes.
        leftovers = engine.docker("ps", "-aq").split()
        if leftovers:
            engine.docker("rm", "-f", "-v", *leftovers)
        volumes = engine.docker("volume", "ls", "-q").split()
        if volumes:
            engine.docker("volume", "rm", "-f", *volumes)
    except BaseException:
        release_slot(engine.slot)
        raise

    return engine


def stop_second_engine(engine: SecondEngine) -> None:
    """Stop it by its pid file, delete its bridge, release its slot."""
    release_slot(engine.slot)


def _manual_slots() -> list[int]:
    return [
        slot
        for slot in range(SLOTS)
        if (RUN_BASE / f"slot{slot}" / "owner").is_file()
        and (RUN_BASE / f"slot{slot}" / "owner").read_text().strip() == MANUAL
    ]


def _print_env(engine: SecondEngine) -> None:
    for key, value in engine.docker_env().items():
        print(f"export {key}={value}")  # noqa: T201 - the script's output

    print(f"# peer address {engine.peer_address}, bridge {engine.bridge}")  # noqa: T201


def main(argv: list[str]) -> int:
    """``start``, ``env`` or ``stop`` engines started by hand."""
    command = argv[1] if len(argv) == 2 else ""
    if command not in ("start", "env", "stop"):
        print(f"usage: {argv[0]} start|env|stop", file=sys.stderr)  # noqa: T201
        return 2

    if command == "start":
        _print_env(start_second_engine(MANUAL))
        return 0

    slots = _manual_slots()
    if not slots:
        print("no second engine was started by hand", file=sys.stderr)  # noqa: T201
        return 1

    if command == "env":
        _print_env(_engine(slots[0]))

    for slot in slots if command == "stop" else ():
        release_slot(slot)

    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
