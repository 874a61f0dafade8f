"""The server's embedding cache over real HTTP on the tiny model: `/v1/embeddings` and an embed task
answer a repeated text from it (the same vector, the same usage, no evaluation), its counters are
in /metrics, it is off at 0 MiB, and a hot swap to a version with a LoRA adapter gets that
adapter's vectors, not the cached ones of the version before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serve import EMBED_TASK, LiveServer, _wait_for
from tiny_model import write_tiny_adapter

from workhorse.engine import Adapter, Engine, EngineConfig
from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState
from workhorse.tasks.embed import Embedder
from workhorse.tasks.store import ADAPTER_FILE, parse_task, promote, save_task, version_dir

CACHE_METRICS = ("hits_total", "misses_total", "evictions_total", "bytes", "entries", "capacity_bytes")


class Served:
    """A live server and the state behind it (to read its engine's work)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.state = ServerState(settings)
        self.state.load()
        self.live = LiveServer(create_app(settings, state=self.state))
        self.url = self.live.__enter__().url
        self.model = next(iter(self.state.models))

    def close(self) -> None:
        self.live.__exit__()
        asyncio.run(self.state.close())

    def embed(self, texts: list[str] | str, **options) -> dict:
        response = httpx.post(self.url + "/v1/embeddings", json={"model": self.model, "input": texts,
                                                                 "encoding_format": "float", **options}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def task(self, name: str, texts: list[str]) -> list[dict]:
        response = httpx.post(f"{self.url}/v1/tasks/{name}", json={"inputs": texts}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["answers"]

    def cache(self) -> dict[str, float]:
        """The embedding cache's figures as /metrics reports them."""
        found = {}
        for family in text_string_to_metric_families(httpx.get(self.url + "/metrics").text):
            for sample in family.samples:
                if sample.name.startswith("workhorse_embedding_cache_"):
                    found[sample.name.removeprefix("workhorse_embedding_cache_")] = sample.value
        return found

    def tokens_evaluated(self) -> int:
        return self.state.models[self.model].worker.call(lambda engine: engine.stats.tokens_evaluated)

    def tokens(self, text: str) -> int:
        return len(self.state.models[self.model].worker.model.tokenize(text))


def _settings(tiny_gguf, tmp_path, **overrides) -> ServeSettings:
    return ServeSettings(models=[str(tiny_gguf)], threads=1, n_slots=8, call_log=str(tmp_path / "calls.db"), **overrides)


@pytest.fixture(scope="module")
def served(tiny_gguf, tmp_path_factory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("cache-tasks")
    (directory / "toy-embed.yaml").write_text(EMBED_TASK.format(model=tiny_gguf))
    served = Served(_settings(tiny_gguf, directory, tasks=[str(directory / "toy-embed.yaml")]))
    yield served
    served.close()


def _vectors(answer: dict) -> np.ndarray:
    return np.array([item["embedding"] for item in answer["data"]])


def test_a_repeated_text_costs_a_lookup_and_gets_the_same_vector_and_usage(served):
    first = served.embed("where is my parcel")
    before, evaluated = served.cache(), served.tokens_evaluated()
    again = served.embed("where is my parcel")
    after = served.cache()
    assert again["data"] == first["data"]  # the very floats
    assert again["usage"] == first["usage"] == {"prompt_tokens": served.tokens("where is my parcel"),
                                                "total_tokens": served.tokens("where is my parcel")}
    assert after["hits_total"] == before["hits_total"] + 1 and after["misses_total"] == before["misses_total"]
    assert served.tokens_evaluated() == evaluated  # nothing reached the model


def test_five_texts_with_two_cached_evaluate_three(served):
    cached = served.embed(["reset my password", "card declined"])
    texts = ["card declined", "cancel my order", "reset my password", "talk to a human", "card declined twice"]
    before, evaluated = served.cache(), served.tokens_evaluated()
    answer = served.embed(texts)
    after = served.cache()
    assert after["hits_total"] - before["hits_total"] == 2 and after["misses_total"] - before["misses_total"] == 3
    assert served.tokens_evaluated() - evaluated == sum(served.tokens(t) for t in (texts[1], texts[3], texts[4]))
    assert answer["usage"]["prompt_tokens"] == sum(served.tokens(t) for t in texts)  # cached inputs count too
    vectors, known = _vectors(answer), _vectors(cached)
    np.testing.assert_array_equal(vectors[[0, 2]], known[[1, 0]])
    assert [item["index"] for item in answer["data"]] == list(range(5))


def test_dimensions_are_part_of_the_key(served):
    full = _vectors(served.embed("change my address"))[0]
    before = served.cache()
    short = _vectors(served.embed("change my address", dimensions=8))[0]
    assert served.cache()["misses_total"] == before["misses_total"] + 1
    np.testing.assert_allclose(short, full[:8] / np.linalg.norm(full[:8]), atol=1e-5)


def test_an_embed_task_answers_repeats_from_the_cache_and_still_logs_every_call(served):
    first = served.task("toy-embed", ["lost card", "lost card", "refund"])
    before, evaluated = served.cache(), served.tokens_evaluated()
    again = served.task("toy-embed", ["refund", "lost card"])
    assert served.cache()["hits_total"] == before["hits_total"] + 2 and served.tokens_evaluated() == evaluated
    assert [a["answer"] for a in again] == [first[2]["answer"], first[0]["answer"]]
    assert first[0]["answer"] == first[1]["answer"] and len(first[0]["answer"]) == 16
    calls = [served.state.call_log.get(a["call_id"]) for a in first + again]
    assert all(call is not None for call in calls)  # a cached answer is a call like any other
    assert [c["prompt_tokens"] for c in calls] == [served.tokens(t) for t in ["lost card", "lost card", "refund", "refund",
                                                                               "lost card"]]


def test_metrics_report_the_cache(served):
    served.embed("anything at all")
    figures = served.cache()
    assert set(CACHE_METRICS) <= set(figures)
    assert figures["capacity_bytes"] == 256 * 2**20 and figures["entries"] > 0 and figures["bytes"] > 0


def test_with_no_memory_for_it_the_cache_is_off(tiny_gguf, tmp_path):
    served = Served(_settings(tiny_gguf, tmp_path, tasks=[], embedding_cache_mb=0))
    try:
        first = served.embed("where is my parcel")
        evaluated = served.tokens_evaluated()
        again = served.embed("where is my parcel")
        assert served.tokens_evaluated() - evaluated == served.tokens("where is my parcel")  # evaluated again
        np.testing.assert_allclose(_vectors(again), _vectors(first), atol=1e-6)
        assert served.cache() == dict.fromkeys(CACHE_METRICS, 0.0)
    finally:
        served.close()


def test_a_small_bound_keeps_the_recent_vectors(tiny_gguf, tmp_path):
    served = Served(_settings(tiny_gguf, tmp_path, tasks=[], embedding_cache_mb=0.002))  # 2,097 bytes: a few vectors
    try:
        texts = [f"query number {i}" for i in range(8)]
        for text in texts:
            served.embed(text)
        figures = served.cache()
        assert 0 < figures["entries"] < 8 and figures["evictions_total"] == 8 - figures["entries"]
        assert figures["bytes"] <= figures["capacity_bytes"]
        before = served.cache()
        served.embed(texts[-1])
        served.embed(texts[0])
        after = served.cache()
        assert after["hits_total"] == before["hits_total"] + 1 and after["misses_total"] == before["misses_total"] + 1
    finally:
        served.close()


SWAPPED = """
name: swap-vectors
kind: embed
model: {model}
embed: {{dimensions: 16}}
"""


def test_a_hot_swap_to_a_version_with_an_adapter_gets_the_adapters_vectors(tiny_gguf, tiny_model, tmp_path):
    adapter_file, _ = write_tiny_adapter(tmp_path / "lora.gguf", ("attn_q", "attn_v", "ffn_down"), size=2.0)
    plain = parse_task(SWAPPED.format(model=tiny_gguf))
    tuned = plain.model_copy(update={"version": 2})
    save_task(plain)
    (version_dir(tuned) / ADAPTER_FILE).write_bytes(adapter_file.read_bytes())
    save_task(tuned)
    promote("swap-vectors", 1, reason="served first")
    served = Served(_settings(tiny_gguf, tmp_path, tasks=["swap-vectors"], task_reload_s=0.1))
    text = ["my card is lost today"]
    try:
        [v1] = served.task("swap-vectors", text)
        assert v1["version"] == 1 and served.task("swap-vectors", text)[0]["answer"] == v1["answer"]  # cached
        promote("swap-vectors", 2, reason="tuned")
        _wait_for(lambda: served.task("swap-vectors", text)[0]["version"] == 2)
        [v2] = served.task("swap-vectors", text)
        hits = served.cache()["hits_total"]
        assert served.task("swap-vectors", text)[0]["answer"] == v2["answer"]
        assert served.cache()["hits_total"] == hits + 1  # v2's vector is cached in its turn
        promote("swap-vectors", 1, reason="rollback")
        _wait_for(lambda: served.task("swap-vectors", text)[0]["version"] == 1)
        [back] = served.task("swap-vectors", text)
    finally:
        served.close()
    engine = Engine(tiny_model, EngineConfig(n_ctx=1024, n_slots=4, adapter=Adapter.from_file(adapter_file)))
    try:
        reference = Embedder(tuned, engine).embed(text)[0]  # uncached, on an engine of its own
    finally:
        engine.close()
    assert np.abs(np.array(v2["answer"]) - np.array(v1["answer"])).max() > 0.05  # not v1's cached vector
    np.testing.assert_allclose(v2["answer"], reference, atol=1e-3)
    assert back["answer"] == v1["answer"]  # the same computation as v1's: its vector, still cached


def test_a_version_with_other_options_does_not_see_the_old_vectors(tiny_gguf, tmp_path):
    first = parse_task(SWAPPED.format(model=tiny_gguf))
    save_task(first)
    promote("swap-vectors", 1, reason="served first")
    shorter = first.embed.model_copy(update={"dimensions": 8})
    save_task(first.model_copy(update={"version": 2, "embed": shorter}))
    served = Served(_settings(tiny_gguf, tmp_path, tasks=["swap-vectors"], task_reload_s=0.1))
    try:
        [v1] = served.task("swap-vectors", ["refund please"])
        promote("swap-vectors", 2, reason="shorter vectors")
        _wait_for(lambda: served.task("swap-vectors", ["refund please"])[0]["version"] == 2)
        [v2] = served.task("swap-vectors", ["refund please"])
    finally:
        served.close()
    assert len(v1["answer"]) == 16 and len(v2["answer"]) == 8
    full = np.array(v1["answer"][:8])
    np.testing.assert_allclose(v2["answer"], full / np.linalg.norm(full), atol=1e-4)
