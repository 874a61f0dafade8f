"""An encoder (BERT) served by name beside nothing else: /v1/embeddings and an embed task answer
from it, and what it cannot do (generate) is refused with a 400 that says why. On the tiny
random-weight BERT; the real encoder's vectors are checked in test_encoder_minilm.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tiny_bert import N_EMBD, write_tiny_bert

from workhorse.engine import Engine, EngineConfig, EvalRequest, LlamaModel
from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState

EMBED_TASK = """
name: bert-embed
kind: embed
model: {model}
"""

TEXTS = ["my card has not arrived", "refund my order please", "login error"]


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert.gguf")


@pytest.fixture
def served(bert_path: Path, tmp_path: Path) -> Iterator[TestClient]:
    task = tmp_path / "bert-embed.yaml"
    task.write_text(EMBED_TASK.format(model=bert_path))
    settings = ServeSettings(models=[str(bert_path)], tasks=[str(task)], threads=1, n_ctx=512, n_slots=4, log_calls=False)
    state = ServerState(settings)
    state.load()
    try:
        with TestClient(create_app(settings, state=state), base_url="http://localhost") as client:
            yield client
    finally:
        asyncio.run(state.close())


def _expected(bert_path: Path) -> np.ndarray:
    model = LlamaModel(bert_path)
    engine = Engine(model, EngineConfig(n_ctx=512, n_batch=512, n_slots=4, prefix_slots=0))
    try:
        vectors = np.stack([r.pooled for r in engine.evaluate([EvalRequest(model.tokenize(t), pooling="mean") for t in TEXTS])])
    finally:
        engine.close()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_embeddings_and_embed_tasks_run_on_an_encoder(served: TestClient, bert_path: Path) -> None:
    expected = _expected(bert_path)
    response = served.post("/v1/embeddings", json={"model": "tiny-bert", "input": TEXTS})
    assert response.status_code == 200, response.text
    vectors = np.array([item["embedding"] for item in response.json()["data"]])
    assert vectors.shape == (len(TEXTS), N_EMBD)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    answers = served.post("/v1/tasks/bert-embed", json={"inputs": TEXTS}).json()["answers"]
    np.testing.assert_allclose(np.array([a["answer"] for a in answers]), expected, atol=1e-5)


@pytest.mark.parametrize(("route", "body"), [
    ("/v1/chat/completions", {"model": "tiny-bert", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"model": "tiny-bert", "prompt": "hi"}),
])
def test_generation_on_an_encoder_is_a_clear_400(served: TestClient, route: str, body: dict) -> None:
    response = served.post(route, json=body)
    assert response.status_code == 400
    assert "is an encoder" in response.json()["error"]["message"]


def test_a_request_without_a_model_goes_to_the_embedding_model(served: TestClient, bert_path: Path) -> None:
    response = served.post("/v1/embeddings", json={"input": TEXTS})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "tiny-bert"  # the only model loaded: the first one
    np.testing.assert_allclose(np.array([item["embedding"] for item in response.json()["data"]]), _expected(bert_path), atol=1e-5)


def test_the_english_encoder_is_served_by_default_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from workhorse.models import registry

    monkeypatch.setattr(registry, "encoder_installed", lambda: True)
    assert ServeSettings().models == ["gemma3-270m", "qwen2.5-coder-0.5b", "minilm-l6"]
    monkeypatch.setattr(registry, "encoder_installed", lambda: False)
    assert ServeSettings().models == ["gemma3-270m", "qwen2.5-coder-0.5b"]
    assert ServeSettings(models=["gemma3-270m"]).models == ["gemma3-270m"]


def test_the_embedding_model_prefers_the_encoder_then_the_setting(bert_path: Path) -> None:
    state = ServerState(ServeSettings(models=[str(bert_path)], threads=1))
    state.models = {"gemma3-270m": None, "minilm-l6": None}  # type: ignore[dict-item] - names are all it reads
    assert state.embedding_model() == "minilm-l6"
    state.models = {"gemma3-270m": None, "qwen2.5-coder-0.5b": None}  # type: ignore[dict-item]
    assert state.embedding_model() == "gemma3-270m"
    state.settings = ServeSettings(models=[str(bert_path)], embedding_model="qwen2.5-coder-0.5b")
    assert state.embedding_model() == "qwen2.5-coder-0.5b"
