"""Fixtures the bots' test modules share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import issue_test_cert


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A server certificate for 127.0.0.1 from a CA of the test's own: (cert, key, CA file)."""
    _, cert, key, ca_file = issue_test_cert(tmp_path_factory.mktemp("botcerts"))
    return cert, key, ca_file
