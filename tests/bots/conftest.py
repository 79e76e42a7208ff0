"""Fixtures the bots' test modules share."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A server certificate for 127.0.0.1 from a CA of the test's own: (cert, key, CA file)."""
    root = tmp_path_factory.mktemp("botcerts")
    authority = trustme.CA()
    server = authority.issue_cert("127.0.0.1")
    cert, key, ca_file = root / "server.pem", root / "server.key", root / "ca.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(ca_file))
    return cert, key, ca_file
