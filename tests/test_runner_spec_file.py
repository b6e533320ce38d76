"""The runner's spec file: the schema, its errors, and the committed example."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolecall._errors import SpecFileError
from rolecall._images import known_images
from rolecall._run_command import run_runner
from rolecall._spec_file import load_spec_file
from rolecall.hooks_protocol import Topology

pytestmark = pytest.mark.timeout(10)

EXAMPLE = Path(__file__).parent.parent / "examples" / "cache.toml"

FULL = """\
[services.cache]
image = "rolecall/redis:0123"
topology = "redundant"
replicas = 2
memory_limit = "256MiB"
secret = ["REDIS_PASSWORD"]
config = { maxmemory = "64mb" }
env = { REDIS_PASSWORD = "s3cret-value", MODE = "fast" }
labels = { "team" = "web" }

[services.queue]
example = "redis"
memory_limit = 8388608
"""


def _error(tmp_path: Path, text: str) -> SpecFileError:
    with pytest.raises(SpecFileError) as caught:
        load_spec_file(_write(tmp_path, text))
    return caught.value


def test_every_key_reaches_the_service_spec(tmp_path: Path) -> None:
    """Each key of a service table lands in its ServiceSpec field."""
    spec_file = load_spec_file(_write(tmp_path, FULL))
    cache = spec_file.services["cache"]
    queue = spec_file.services["queue"]

    assert sorted(spec_file.services) == ["cache", "queue"]
    assert (cache.image, cache.example) == ("rolecall/redis:0123", None)
    assert cache.spec.image == "rolecall/redis:0123"
    assert cache.spec.topology is Topology.REDUNDANT
    assert cache.spec.replicas == 2
    assert cache.spec.memory_limit == 256 << 20
    assert cache.spec.secret_keys == frozenset({"REDIS_PASSWORD"})
    assert cache.spec.config == {"maxmemory": "64mb"}
    assert cache.spec.env == {"REDIS_PASSWORD": "s3cret-value", "MODE": "fast"}
    assert cache.spec.labels == {"team": "web"}
    assert (queue.image, queue.example) == (None, "redis")
    assert queue.spec.topology is Topology.STANDALONE
    assert (queue.spec.replicas, queue.spec.memory_limit) == (1, 8 << 20)
    assert spec_file.secrets() == {"s3cret-value"}


def test_the_committed_example_loads() -> None:
    """examples/cache.toml is a valid spec of one standalone Redis service."""
    spec_file = load_spec_file(EXAMPLE)
    (entry,) = spec_file.services.values()

    assert entry.name == "cache"
    assert entry.example == "redis"
    assert entry.example in known_images()
    assert entry.spec.topology is Topology.STANDALONE
    assert entry.spec.secret_keys == frozenset({"REDIS_PASSWORD"})


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        pytest.param(
            "[services.cache]\nexample = 'redis'\nreplica = 2\n",
            "services.cache.replica",
            "unknown key services.cache.replica",
            id="unknown-key",
        ),
        pytest.param(
            "[service.cache]\nexample = 'redis'\n",
            "service",
            "unknown top-level key 'service'",
            id="unknown-table",
        ),
        pytest.param(
            "[services.cache]\ntopology = 'standalone'\n",
            "services.cache",
            "needs exactly one of `image`",
            id="no-image",
        ),
        pytest.param(
            "[services.cache]\nimage = 'a'\nexample = 'redis'\n",
            "services.cache",
            "needs exactly one of `image`",
            id="both-images",
        ),
        pytest.param(
            "[services.cache]\nexample = 'mysql'\n",
            "services.cache.example",
            "services.cache.example is 'mysql'",
            id="unknown-example",
        ),
        pytest.param(
            "[services.cache]\nexample = 'redis'\nreplicas = 'two'\n",
            "services.cache.replicas",
            "must be a whole number, got 'two'",
            id="replicas-text",
        ),
        pytest.param(
            "[services.cache]\nexample = 'redis'\nmemory_limit = '1 TB'\n",
            "services.cache.memory_limit",
            "must be bytes, or a number with B, KiB, MiB or GiB",
            id="bad-size",
        ),
        pytest.param(
            "[services.cache]\nexample = 'redis'\ntopology = 'ring'\n",
            "services.cache",
            "unknown topology 'ring'",
            id="bad-topology",
        ),
        pytest.param(
            "[services.Cache]\nexample = 'redis'\n",
            "services.Cache",
            "service name 'Cache' is not usable",
            id="bad-name",
        ),
        pytest.param(
            "[services.cache]\nexample = 'redis'\nsecret = ['NOPE']\n",
            "services.cache",
            "marks ['NOPE'] secret but its env has no such keys",
            id="unknown-secret",
        ),
        pytest.param(
            "[services.cache\n",
            None,
            "is not valid TOML",
            id="not-toml",
        ),
    ],
)
def test_a_broken_file_is_refused_naming_the_key(
    tmp_path: Path, text: str, key: str | None, words: str
) -> None:
    """Each schema error names the file and the key at fault."""
    error = _error(tmp_path, text)

    assert words in str(error)
    assert str(tmp_path / "spec.toml") in str(error)
    assert error.key == key


def test_an_env_value_of_the_wrong_type_is_not_shown(tmp_path: Path) -> None:
    """An env value that is not a string is refused without quoting it."""
    error = _error(
        tmp_path,
        "[services.cache]\nexample = 'redis'\nenv = { PASSWORD = 123456789 }\n",
    )

    assert "services.cache.env.PASSWORD must be a string" in str(error)
    assert "123456789" not in str(error)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    """A path with no file behind it is refused with the reason."""
    path = tmp_path / "nope.toml"
    with pytest.raises(SpecFileError) as caught:
        load_spec_file(path)

    assert str(caught.value) == (
        f"cannot read spec file {str(path)!r}: No such file or directory"
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.anyio
async def test_take_over_of_a_service_the_file_lacks_is_refused(
    tmp_path: Path,
) -> None:
    """`--take-over` naming a service the file does not have stops the
    start before the engine or the state directory is touched."""
    spec = _write(tmp_path, FULL)
    state = tmp_path / "state"
    with pytest.raises(SpecFileError) as caught:
        await run_runner(spec, state_dir=state, take_over={"cache", "nope"})

    assert str(caught.value) == (
        "--take-over names service 'nope', which the spec file does not have"
        " (it has: cache, queue)"
    )
    assert not state.exists()
