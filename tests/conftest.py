"""Shared fixtures. Inference: the embedded model and tiny random Llamas (tests/inference_fixtures.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

# The engines choose their threads from the cores other processes leave free, and the count
# moves the last digits of their arithmetic: tests pin it (as the engines' old default, every
# usable core) so answers do not depend on what else the machine runs.
os.environ.setdefault("SLLMBO_THREADS", str(len(os.sched_getaffinity(0))
                                            if hasattr(os, "sched_getaffinity")
                                            else os.cpu_count() or 1))

@pytest.fixture(scope="session")
def embedded_model() -> Path:
    """The real SmolLM2-135M-Instruct folder, pulled once if missing (idempotent)."""
    from sllmbo.inference.models import pull_default_model

    return pull_default_model()


@pytest.fixture(scope="session")
def tiny_model(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight Llama with the embedded model's tokenizer and chat template."""
    from inference_fixtures import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", embedded_model)


@pytest.fixture(scope="session")
def tiny_backend(tiny_model: Path):
    """A CPU ``TransformersBackend`` on ``tiny_model`` shared by the tests that only read it."""
    from sllmbo.inference.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_model, device="cpu")
    yield backend
    backend.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on a free loopback port (skips when none can start)."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="sllmbo-pg-"))
    data, port = root / "data", _free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        runuser = shutil.which("runuser")
        if runuser is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root and no 'postgres' user/runuser to start a server")
        shutil.chown(root, "postgres")
        root.chmod(0o755)
        prefix = [runuser, "-u", "postgres", "--"]
    init = subprocess.run([*prefix, initdb, "-D", str(data), "-U", "sllmbo", "--auth=trust"],
                          capture_output=True, text=True)
    if init.returncode:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    start = subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30", "-o",
         f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
        capture_output=True, text=True)
    if start.returncode:
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    try:
        yield f"postgresql+psycopg2://sllmbo@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
