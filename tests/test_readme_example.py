"""The README's embedding example is the example file, and it runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "embed_redis.py"
MARKER = "<!-- embedding-example: examples/embed_redis.py -->"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    after = text.split(MARKER, 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match is not None, "the README lost its embedding example block"
    return match.group(1)


def test_readme_shows_the_example_file_verbatim() -> None:
    """The code in the README is exactly the example that the next test runs."""
    assert readme_example() == EXAMPLE.read_text()


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_embedding_example_runs_against_the_real_engine(tmp_path: Path) -> None:
    """The example brings Redis up, converts it and removes it, exiting 0,
    keeping its journal in the default folder under the state directory."""
    environ = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "ROLECALL_STATE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert "standalone: sessions-1 at 127.0.0.1:" in done.stdout
    assert re.search(r"sessions-1: primary published at 127\.0\.0\.1:\d+", done.stdout)
    assert re.search(r"sessions-2: replica published at 127\.0\.0\.1:\d+", done.stdout)
    # Removing the service forgot it; the journal's lock file stays.
    assert [p.name for p in (tmp_path / "embedded" / "journal").iterdir()] == ["lock"]
