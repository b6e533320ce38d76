"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run core tests on both backends; Docker tests override this."""
    return str(request.param)


# Docker fixtures for tests marked `docker`, defined in docker_support.py.
# Imported here so that pytest finds them by name: hence E402 and F401.
from docker_support import (  # noqa: E402, F401
    busybox_image,
    docker_engine,
    docker_engine_gate,
    docker_labels,
    docker_runtime,
    second_engine,
)
