"""Shared fixtures: the gateway binary, a fresh data directory, the shipped manifests."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def gateway_bin() -> str:
    path = os.environ.get("ODF_GATEWAY_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("ODF_GATEWAY_BIN must name the built odf-gateway binary (tests/run.sh sets it)")
    return path


@pytest.fixture
def gateway(gateway_bin, tmp_path):
    """Runs `odf-gateway ARGS...` against a fresh data directory; fails on a non-zero exit."""
    data_dir = tmp_path / "data"

    def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "ODF_GATEWAY_DATA_DIR": str(data_dir)}
        result = subprocess.run([gateway_bin, *args], input=stdin, capture_output=True, env=env)
        assert result.returncode == 0, result.stderr.decode()
        return result

    run.data_dir = data_dir
    return run


@pytest.fixture
def schemas() -> pathlib.Path:
    return ROOT / "schemas"
