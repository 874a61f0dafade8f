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
