"""The test harness's second engine: TLS on TCP, its own bridge, images."""

from __future__ import annotations

import subprocess

import pytest
from docker_support import DockerLab
from second_engine import SecondEngine

pytestmark = pytest.mark.docker


def _docker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


def test_answers_over_tls_with_the_client_certificate(
    second_engine: SecondEngine,
) -> None:
    """The CLI with the fixture's certificates reaches the engine on TCP."""
    answer = _docker(second_engine.docker_env(), "info", "--format", "{{.Name}}")

    assert answer.returncode == 0, answer.stderr
    assert second_engine.url.startswith("tcp://127.0.0.1:")


def test_refuses_a_client_without_a_certificate(second_engine: SecondEngine) -> None:
    """Plain TCP without a client certificate is not let in."""
    env = {"DOCKER_HOST": second_engine.url, "PATH": "/usr/bin:/bin"}
    answer = _docker(env, "version", "--format", "{{.Server.Version}}")

    assert answer.returncode != 0
    assert answer.stdout.strip() == ""


def test_members_publish_on_its_own_bridge(
    second_engine: SecondEngine, busybox_image: str, docker_labels: DockerLab
) -> None:
    """A container on the default engine reaches a port the second engine
    publishes on its peer address."""
    second_engine.load_image(busybox_image)
    server = second_engine.docker(
        "run", "-d", "--rm", "-p", f"{second_engine.peer_address}::8080",
        busybox_image, "sh", "-c", "echo engine2 > /tmp/who; "
        "exec httpd -f -p 8080 -h /tmp",
    ).strip()  # fmt: skip
    label = [f"--label={key}={value}" for key, value in docker_labels.labels.items()]
    try:
        port = second_engine.docker("port", server, "8080").split(":")[-1].strip()
        fetched = subprocess.run(
            ["docker", "run", "--rm", *label, busybox_image, "wget", "-O", "-",
             f"http://{second_engine.peer_address}:{port}/who"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    finally:
        second_engine.docker("rm", "-f", server)

    assert fetched.stdout.strip() == "engine2", fetched.stderr
