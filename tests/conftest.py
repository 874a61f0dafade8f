from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import write_tiny_gguf


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's ~/.cache/workhorse unless they say so."""
    monkeypatch.setenv("WORKHORSE_HOME", str(tmp_path_factory.mktemp("workhorse-home")))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_model(tiny_gguf: Path):
    from workhorse.engine import LlamaModel

    return LlamaModel(tiny_gguf, name="tiny")


@pytest.fixture(scope="session")
def real_model_path(tmp_path_factory: pytest.TempPathFactory):
    """Assemble a built-in model once per test session (from its installed PyPI packages)."""
    import os

    from workhorse.models import resolve

    home = tmp_path_factory.mktemp("real-models")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            saved = os.environ.get("WORKHORSE_HOME")
            os.environ["WORKHORSE_HOME"] = str(home)
            try:
                cache[name] = resolve(name).path
            finally:
                if saved is None:
                    os.environ.pop("WORKHORSE_HOME", None)
                else:
                    os.environ["WORKHORSE_HOME"] = saved
        return cache[name]

    return get


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (see postgres_server.py). Without PostgreSQL
    installed the tests that need it are skipped, except under CI, where they fail."""
    import os

    import postgres_server

    if postgres_server.binaries() is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed (scripts/setup --test installs it)")
    server = postgres_server.start()
    yield server
    server.stop()
