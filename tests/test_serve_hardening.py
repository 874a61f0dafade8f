"""The server under abuse and bad luck: work nobody waits for leaves the engine (a task batch whose
requests all passed their deadline is withdrawn, neither finished nor logged, and the request keeps
its place in the model's queue until then), queues are bounded, the server's own faults are 5xx,
not the client's 400, /metrics does not wait on a busy engine, and the OpenAPI spec asked for
before the models load is not kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from test_serve import LiveServer, _wait_for

from workhorse.calllog import CallLog
from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState

# Long answers (at least eight 20-character strings), so that a batch of these runs for a while.
LONG_TASK = """
name: long-convert
kind: convert
model: {model}
target: json
instructions: Convert the input to JSON.
schema:
  type: object
  properties:
    words: {{type: array, items: {{type: string, minLength: 20}}, minItems: 8}}
  required: [words]
"""


@pytest.fixture(scope="module")
def served(tiny_gguf, tmp_path_factory) -> Iterator[tuple[ServerState, str]]:
    directory = tmp_path_factory.mktemp("withdraw")
    (directory / "long-convert.yaml").write_text(LONG_TASK.format(model=tiny_gguf))
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=[str(directory / "long-convert.yaml")], threads=1,
                             n_slots=8, queue_limit=4, call_log=str(directory / "calls.db"))
    state = ServerState(settings)
    state.load()
    try:
        with LiveServer(create_app(settings, state=state)) as live:
            yield state, live.url
    finally:
        asyncio.run(state.close())


def test_a_batch_past_its_deadline_is_withdrawn_and_not_logged(served):
    state, url = served
    model = next(iter(state.models.values()))
    inputs = [f"withdrawn item {i}" for i in range(64)]
    response = httpx.post(url + "/v1/tasks/long-convert", json={"inputs": inputs}, headers={"X-Deadline-Ms": "150"},
                          timeout=60)
    assert response.status_code == 504
    assert model.in_flight == 1 or model.worker.call(lambda e: e.free_slots) == state.settings.n_slots
    _wait_for(lambda: model.in_flight == 0)  # the place in the queue is given back once the work has left
    assert model.worker.call(lambda e: e.free_slots) == state.settings.n_slots
    # Without the withdrawal the batch would run to its end and log its 64 answers nobody reads.
    log = CallLog(state.settings.call_log)
    logged = [call["input"] for call in log.iterate()]
    log.close()
    assert not set(inputs) & set(logged)
    # The task still answers afterwards.
    ok = httpx.post(url + "/v1/tasks/long-convert", json={"input": "fine"}, timeout=60)
    assert ok.status_code == 200 and ok.json()["source"] == "local"


def test_a_closed_engine_is_503_with_retry_after(tiny_gguf):
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=[], threads=1, n_slots=4, log_calls=False)
    state = ServerState(settings)
    state.load()
    try:
        with LiveServer(create_app(settings, state=state)) as live:
            model = next(iter(state.models.values()))
            model.worker.close()
            response = httpx.post(live.url + "/v1/embeddings", json={"model": model.name, "input": "hello"})
    finally:
        asyncio.run(state.close())
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "closed" in response.json()["error"]["message"]


def test_the_task_queue_is_bounded():
    from workhorse.serve.batching import QueueFull, TaskBatcher

    async def scenario() -> None:
        release = asyncio.Event()
        loop = asyncio.get_running_loop()

        def run(texts, arrived):
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(30)
            return list(texts)

        batcher = TaskBatcher(run, window_s=0.0, max_batch=4, max_pending=3)
        first = batcher.submit(["a", "b"], time.monotonic() + 30)
        with pytest.raises(QueueFull, match="limit 3"):
            batcher.submit(["c", "d"], time.monotonic() + 30)
        second = batcher.submit(["c"], time.monotonic() + 30)
        release.set()
        assert await asyncio.gather(*first.answers, *second.answers) == ["a", "b", "c"]
        await asyncio.gather(first.left, second.left)
        assert batcher.pending == 0
        batcher.submit(["e", "f", "g"], time.monotonic() + 30)  # room again
        await batcher.close()

    asyncio.run(scenario())


def test_metrics_answer_while_the_engine_is_held(served):
    import threading

    state, url = served
    model = next(iter(state.models.values()))
    busy, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=lambda: model.worker.call(lambda engine: (busy.set(), release.wait(60))))
    holder.start()
    try:
        assert busy.wait(30)
        response = httpx.get(url + "/metrics", timeout=10)  # without a bound on its wait this hangs for 60 s
        assert response.status_code == 200 and "workhorse_requests_total" in response.text
    finally:
        release.set()
        holder.join(60)
    assert f'workhorse_engine_tokens_total{{model="{model.name}"}}' in httpx.get(url + "/metrics").text


def test_the_spec_asked_for_before_loading_is_not_kept(tiny_gguf):
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=[], threads=1, n_slots=4, log_calls=False)
    state = ServerState(settings)
    app = create_app(settings, state=state)
    model_enum = lambda spec: spec["components"]["schemas"]["EmbeddingRequest"]["properties"]["model"].get("enum")  # noqa: E731
    assert model_enum(app.openapi()) is None  # not loaded yet: no names to give
    state.load()
    try:
        assert model_enum(app.openapi()) == list(state.models)
    finally:
        asyncio.run(state.close())


def test_a_keyless_loopback_server_answers_only_to_loopback_names(served):
    """DNS rebinding: a page on evil.example resolves its own name to 127.0.0.1 and calls the
    server; the Host header still says evil.example."""
    _, url = served
    port = url.rsplit(":", 1)[1]
    rebound = httpx.get(url + "/v1/tasks", headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 421 and "evil.example" in rebound.json()["error"]["message"]
    for name in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert httpx.get(url + "/v1/tasks", headers={"Host": name}).status_code == 200


def test_a_cors_preflight_is_answered_before_the_key_check(tiny_gguf):
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=[], threads=1, n_slots=4, log_calls=False,
                             api_keys=["s3cret"], cors_origins=["https://app.example"])
    state = ServerState(settings)
    state.load()
    try:
        with LiveServer(create_app(settings, state=state)) as live:
            preflight = httpx.options(live.url + "/v1/embeddings", headers={
                "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            refused = httpx.post(live.url + "/v1/embeddings", json={"model": "x", "input": "hi"},
                                 headers={"Origin": "https://app.example"})
            keyed = httpx.get(live.url + "/v1/models", headers={"Authorization": "Bearer s3cret",
                                                                "Host": "anything.example"})
    finally:
        asyncio.run(state.close())
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example"
    assert keyed.status_code == 200  # with keys, the key is the guard: any Host name is fine


@pytest.mark.parametrize("chunks", [[80_000], [40_000, 40_000], [30_000, 30_000, 20_000]])
def test_an_oversized_body_is_refused_without_waiting_for_more(chunks):
    """The chunk that passes the limit may be the client's last: the 413 must not wait for body
    that will never come (it did, until the client gave up)."""
    from workhorse.serve.app import _Guard
    from workhorse.serve.metrics import Metrics

    async def app(scope, receive, send):  # never reached: the body is refused before it
        raise AssertionError("the app saw an oversized body")

    messages = [{"type": "http.request", "body": b"x" * size, "more_body": i < len(chunks) - 1} for i, size in enumerate(chunks)]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # a client that has sent everything and waits for the answer

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    settings = ServeSettings(max_body_bytes=64_000)
    guard = _Guard(app, settings=settings, metrics=Metrics())
    scope = {"type": "http", "path": "/v1/tasks/t", "headers": [(b"host", b"localhost")]}
    asyncio.run(asyncio.wait_for(guard(scope, receive, send), timeout=5))
    assert sent[0]["status"] == 413
