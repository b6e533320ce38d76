"""Certificates for the second engine's TLS listener, made with ``openssl``.

A CA, a server certificate for IP 127.0.0.1 and a client certificate, all
EC P-256 and valid for two days: enough for a test session, and quick to
make.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from second_engine_slots import SecondEngineError

__all__ = ["make_ca", "make_certificates", "make_client_certificate"]


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SecondEngineError(f"openssl {args[0]} failed: {done.stderr.strip()}")


_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def make_ca(directory: Path, *, name: str = "ca") -> Path:
    """Make a self-signed CA (``NAME.pem``, ``NAME-key.pem``); its cert."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *_KEY, "-days", "2", "-subj", f"/CN=rolecall test {name}",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", cwd=directory,
    )  # fmt: skip

    return directory / f"{name}.pem"


def _sign(directory: Path, name: str, *, extensions: str) -> None:
    """Make ``NAME-key.pem`` and ``NAME-cert.pem`` signed by ``ca.pem``."""
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
        f"authorityKeyIdentifier=keyid,issuer\n{extensions}\n",
        encoding="utf-8",
    )
    _openssl(
        "req", "-new", *_KEY, "-subj", f"/CN=rolecall test {name}",
        "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem",
        "-CAkey", "ca-key.pem", "-set_serial", str(int.from_bytes(os.urandom(8))),
        "-days", "2", "-extfile", ext.name, "-out", f"{name}-cert.pem",
        cwd=directory,
    )  # fmt: skip


def make_client_certificate(directory: Path) -> None:
    """``cert.pem`` and ``key.pem``: a client certificate signed by the CA
    in ``directory`` (see `make_ca`)."""
    _sign(directory, "client", extensions="extendedKeyUsage=clientAuth")
    (directory / "client-cert.pem").rename(directory / "cert.pem")
    (directory / "client-key.pem").rename(directory / "key.pem")


def make_certificates(directory: Path) -> None:
    """The CA, the server's certificate (for 127.0.0.1) and the client's,
    named as the ``docker`` CLI expects them in ``DOCKER_CERT_PATH``."""
    make_ca(directory)
    _sign(
        directory,
        "server",
        extensions="subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    )
    make_client_certificate(directory)
    for path in directory.iterdir():
        path.chmod(0o600)
