"""Engine records and the TLS set-up that needs no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolecall import actors
from rolecall.actors import DEFAULT_ENGINE, DockerRuntime, EngineConfig, TlsFiles
from rolecall.hooks_protocol import EngineTlsError


def _tls(tmp_path: Path) -> TlsFiles:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("not PEM at all\n", encoding="utf-8")

    return TlsFiles(
        ca=tmp_path / "ca.pem", cert=tmp_path / "cert.pem", key=tmp_path / "key.pem"
    )


class TestEngineConfig:
    """What an engine record accepts."""

    def test_a_tcp_engine_with_tls_and_a_peer_address(self, tmp_path: Path) -> None:
        """A full record keeps what it was given, paths as paths."""
        tls = TlsFiles(ca=str(tmp_path / "ca.pem"), cert="c.pem", key="k.pem")
        engine = EngineConfig(
            name="dc-2", url="tcp://10.0.0.5:2376", tls=tls, peer_address="10.0.0.5"
        )

        assert engine.tls is not None
        assert engine.tls.ca == tmp_path / "ca.pem"
        assert engine.peer_address == "10.0.0.5"
        assert DEFAULT_ENGINE == "default"

    @pytest.mark.parametrize(
        ("field", "value", "words"),
        [
            ("name", "Bad Name", "engine name"),
            ("name", "", "engine name"),
            ("url", "http://host:2375", "engine URL"),
            ("url", "tcp://", "engine URL"),
            ("peer_address", "somehost", "peer_address"),
        ],
    )
    def test_refuses_a_bad_field(self, field: str, value: str, words: str) -> None:
        """A bad name, URL or peer address is refused, naming the field."""
        given = {"name": "dc2", "url": "unix:///var/run/docker.sock", field: value}

        with pytest.raises(ValueError, match=words):
            EngineConfig(**given)

    def test_refuses_tls_on_a_unix_socket(self, tmp_path: Path) -> None:
        """TLS files make sense for tcp:// only."""
        with pytest.raises(ValueError, match="tcp:// URL only"):
            EngineConfig(name="dc2", url="unix:///x.sock", tls=_tls(tmp_path))

    def test_is_exported(self) -> None:
        """The records and the opener are public names of the actors package."""
        for name in (
            "EngineConfig",
            "TlsFiles",
            "DEFAULT_ENGINE",
            "open_engine_runtime",
        ):
            assert name in actors.__all__


class TestTlsFiles:
    """Bad certificate files are reported when the runtime is made."""

    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        """A missing client key names that file and the engine."""
        tls = _tls(tmp_path)
        (tmp_path / "key.pem").unlink()
        engine = EngineConfig(name="dc2", url="tcp://127.0.0.1:2376", tls=tls)

        with pytest.raises(EngineTlsError) as caught:
            DockerRuntime.for_engine(engine)

        assert caught.value.path == str(tmp_path / "key.pem")
        assert caught.value.engine == "dc2"
        assert "cannot read its TLS key file" in str(caught.value)

    def test_a_file_that_is_not_pem_is_named(self, tmp_path: Path) -> None:
        """A CA file that holds no certificate names the CA file."""
        engine = EngineConfig(
            name="dc2", url="tcp://127.0.0.1:2376", tls=_tls(tmp_path)
        )

        with pytest.raises(EngineTlsError) as caught:
            DockerRuntime.for_engine(engine)

        assert caught.value.path == str(tmp_path / "ca.pem")
        assert caught.value.address == "tcp://127.0.0.1:2376"

    def test_tls_on_a_socket_url_is_refused(self, tmp_path: Path) -> None:
        """The runtime refuses TLS files with a unix socket too."""
        with pytest.raises(ValueError, match="tcp:// URL only"):
            DockerRuntime("unix:///var/run/docker.sock", tls=_tls(tmp_path))
