"""The embedded stand-ins refuse to start on top of something else."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from poolhub.embedded import start_filestore


def test_filestore_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]

        with pytest.raises(RuntimeError, match=f"port {port} .* in use"):
            start_filestore(tmp_path / "filestore", port)
