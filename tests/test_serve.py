"""`workhorse serve` on a real uvicorn server on a loopback port, driven over real HTTP (httpx and
the official `openai` client), with the tiny generated GGUF as the model."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import pytest
import uvicorn

from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState

CLASSIFY_TASK = """
name: toy-intents
kind: classify
model: {model}
instructions: Classify the request.
labels:
  - name: refund
  - name: login
  - name: card
serve:
  fallback: card
"""

EMBED_TASK = """
name: toy-embed
kind: embed
model: {model}
embed: {{dimensions: 16}}
"""


class LiveServer:
    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory, tiny_gguf) -> Path:
    directory = tmp_path_factory.mktemp("served-tasks")
    (directory / "toy-intents.yaml").write_text(CLASSIFY_TASK.format(model=tiny_gguf))
    (directory / "toy-embed.yaml").write_text(EMBED_TASK.format(model=tiny_gguf))
    return directory


@pytest.fixture(scope="module")
def settings(tiny_gguf, tasks_dir) -> ServeSettings:
    return ServeSettings(
        models=[str(tiny_gguf)],
        tasks=[str(tasks_dir / "toy-intents.yaml"), str(tasks_dir / "toy-embed.yaml")],
        threads=1,
        n_ctx=4096,
        n_slots=8,
        queue_limit=4,
        max_body_bytes=64_000,
        max_item_chars=2_000,
        max_tokens_limit=2048,
        call_log=str(tasks_dir / "calls.db"),
    )


@pytest.fixture(scope="module")
def state(settings) -> Iterator[ServerState]:
    state = ServerState(settings)
    state.load()
    yield state
    asyncio.run(state.close())


@pytest.fixture(scope="module")
def server(settings, state) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings, state=state)) as live:
        yield live


@pytest.fixture(scope="module")
def model_id(state) -> str:
    return next(iter(state.models))


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_health_readiness_and_models(server, client, model_id):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["tasks"] == ["toy-intents", "toy-embed"]
    assert [m.id for m in client.models.list().data] == [model_id]
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"] and "/v1/tasks/{name}" in spec["paths"]


def test_chat_completion_and_its_stream_agree(client, model_id):
    messages = [{"role": "user", "content": "where is my parcel"}]
    full = client.chat.completions.create(model=model_id, messages=messages, max_tokens=12, temperature=0)
    assert full.choices[0].finish_reason in ("length", "stop")
    assert full.usage.completion_tokens <= 12 and full.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(model=model_id, messages=messages, max_tokens=12, temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason


def test_json_schema_response_format_is_always_valid(client, model_id):
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": ["refund", "login"]}, "urgency": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["intent", "urgency"],
        "additionalProperties": False,
    }
    for seed in range(4):
        reply = client.chat.completions.create(
            model=model_id,
            messages=[{"role": "user", "content": "refund please"}],
            response_format={"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema}},
            temperature=1.0,
            seed=seed,
            max_tokens=64,
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_tool_calls_have_schema_valid_arguments(client, model_id):
    parameters = {
        "type": "object",
        "properties": {"city": {"enum": ["Oslo", "Lyon"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    tools = [{"type": "function", "function": {"name": "forecast", "description": "Weather", "parameters": parameters}}]
    reply = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "weather in Oslo"}], tools=tools, tool_choice="required",
        max_tokens=64,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "forecast"
    jsonschema.validate(json.loads(call.function.arguments), parameters)


def test_stop_strings_never_cut_constrained_output(client, model_id):
    parameters = {"type": "object", "properties": {"city": {"enum": ["Oslo", "Lyon"]}}, "required": ["city"],
                  "additionalProperties": False}
    tools = [{"type": "function", "function": {"name": "forecast", "parameters": parameters}}]
    reply = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "weather"}], tools=tools,
                                           tool_choice="required", stop=['"', "}"], max_tokens=64)
    [call] = reply.choices[0].message.tool_calls
    jsonschema.validate(json.loads(call.function.arguments), parameters)
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}}, "required": ["name"],
              "additionalProperties": False}
    reply = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "a name"}], stop=['"'], max_tokens=64,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_a_tool_call_cut_by_max_tokens_is_no_tool_call(client, model_id):
    parameters = {"type": "object", "properties": {"note": {"type": "string", "minLength": 40}}, "required": ["note"],
                  "additionalProperties": False}
    tools = [{"type": "function", "function": {"name": "remember", "parameters": parameters}}]
    reply = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "note"}], tools=tools,
                                           tool_choice="required", max_tokens=3)
    choice = reply.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.tool_calls is None and choice.message.content is None


def test_completions_and_embeddings(client, model_id, state):
    text = client.completions.create(model=model_id, prompt="the refund", max_tokens=5, temperature=0)
    assert text.choices[0].finish_reason in ("length", "stop") and text.usage.completion_tokens <= 5
    result = client.embeddings.create(model=model_id, input=["my card", "login error", "my card"])  # base64 on the wire
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, state.models[model_id].worker.model.n_embd)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-5)
    short = client.embeddings.create(model=model_id, input="my card", dimensions=8, encoding_format="float")
    assert len(short.data[0].embedding) == 8


def test_task_endpoints(server):
    listed = httpx.get(server.url + "/v1/tasks").json()["data"]
    assert {t["name"] for t in listed} == {"toy-intents", "toy-embed"}
    one = httpx.post(server.url + "/v1/tasks/toy-intents", json={"input": "I want my money back"}).json()
    assert one["answer"] in ("refund", "login", "card") and 0 < one["confidence"] <= 1
    assert one["task"] == "toy-intents" and one["version"] == 1 and one["latency_ms"] > 0 and "model" in one
    batch = httpx.post(server.url + "/v1/tasks/toy-intents", json={"inputs": ["a", "b", "c"]}).json()
    assert len(batch["answers"]) == 3
    vectors = httpx.post(server.url + "/v1/tasks/toy-embed", json={"inputs": ["x", "y"]}).json()["answers"]
    assert [len(v["answer"]) for v in vectors] == [16, 16]


def test_concurrent_task_requests_are_batched_and_answered_alike(server, state):
    texts = [f"request number {i}" for i in range(24)]
    alone = [httpx.post(server.url + "/v1/tasks/toy-intents", json={"input": t}).json()["answer"] for t in texts[:6]]
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda t: httpx.post(server.url + "/v1/tasks/toy-intents", json={"input": t}, timeout=60), texts))
    assert {r.status_code for r in together} <= {200, 429} and any(r.status_code == 200 for r in together)
    for response, answer in zip(together, alone):  # a batch answers each item as it would alone
        if response.status_code == 200:
            assert response.json()["answer"] == answer
    metrics = httpx.get(server.url + "/metrics").text
    assert "workhorse_batch_size_bucket" in metrics


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/tasks/nope", {"input": "x"}, 404, "toy-intents"),
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "use one of"),
        ("/v1/tasks/toy-intents", {"input": "x" * 3000}, 413, "limit is 2000"),
        ("/v1/tasks/toy-intents", {"inputs": []}, 422, "empty"),
        ("/v1/tasks/toy-intents", {"input": ""}, 422, "input is empty"),
        ("/v1/tasks/toy-intents", {"inputs": ["fine", " \n "]}, 422, "inputs[1] is empty"),
        ("/v1/chat/completions", {"model": "M", "messages": [{"role": "user", "content": "x" * 3000}]}, 413,
         "messages[0].content has 3000 characters"),
        ("/v1/tasks/toy-intents", {"input": "a", "inputs": ["b"]}, 422, "exactly one"),
        ("/v1/tasks/toy-intents", {"text": "a"}, 422, "text"),
        ("/v1/chat/completions", {"model": "M", "messages": []}, 422, "messages"),
        ("/v1/chat/completions", {"model": "M", "messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n must be 1"),
        ("/v1/chat/completions", {"model": "M", "messages": [{"role": "user", "content": "x"}], "max_tokens": 99999}, 400, "limit"),
        ("/v1/chat/completions", {"model": "M", "messages": [{"role": "user", "content": "x"}],
                                  "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "bogus"}}}},
         400, "schema"),
        ("/v1/embeddings", {"model": "M", "input": []}, 400, "empty"),
    ],
)
def test_client_mistakes_get_4xx_with_a_message(server, model_id, path, body, status, says):
    if body.get("model") == "M":
        body = body | {"model": model_id}
    response = httpx.post(server.url + path, json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]


def test_malformed_and_oversized_bodies(server):
    bad = httpx.post(server.url + "/v1/tasks/toy-intents", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith("body is not valid JSON at character 1") and bad.json()["error"]["param"] is None
    big = httpx.post(server.url + "/v1/tasks/toy-intents", json={"input": "x" * 70_000})
    assert big.status_code == 413 and "64000" in big.json()["error"]["message"]

    def chunks():
        for _ in range(20):
            yield b"x" * 4000

    chunked = httpx.post(server.url + "/v1/tasks/toy-intents", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def _long_chat(model_id: str, max_tokens: int = 2000) -> dict:
    # A schema that forbids stopping early: the random tiny model cannot end with EOS after a few tokens.
    story = {"type": "object", "properties": {"story": {"type": "string", "minLength": 5000}}, "required": ["story"]}
    return {"model": model_id, "messages": [{"role": "user", "content": "tell me a story"}], "max_tokens": max_tokens,
            "temperature": 1.0, "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": story}}}


def test_a_missed_deadline_answers_504_and_frees_the_engine(server, state, model_id):
    response = httpx.post(server.url + "/v1/chat/completions", json=_long_chat(model_id), headers={"X-Deadline-Ms": "300"})
    assert response.status_code == 504 and "deadline" in response.json()["error"]["message"]
    worker = state.models[model_id].worker
    _wait_for(lambda: worker.call(lambda e: e.free_slots) == state.settings.n_slots)
    bad = httpx.post(server.url + "/v1/tasks/toy-intents", json={"input": "x"}, headers={"X-Deadline-Ms": "soon"})
    assert bad.status_code == 400


def test_a_task_deadline_gives_its_fallback_and_logs_it(server):
    response = httpx.post(server.url + "/v1/tasks/toy-intents", json={"input": "x"}, headers={"X-Deadline-Ms": "0.001"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["answer"] == "card" and answer["fallback"] is True and answer["source"] == "fallback"
    logged = httpx.get(f"{server.url}/v1/calls/{answer['call_id']}").json()
    assert logged["source"] == "fallback" and logged["final_answer"] == "card" and logged["input"] == "x"


def test_a_full_queue_answers_429_with_retry_after(server, model_id, state):
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(
            lambda _: httpx.post(server.url + "/v1/chat/completions", json=_long_chat(model_id, 60), timeout=120), range(10)
        ))
    statuses = [r.status_code for r in responses]
    assert 429 in statuses and 200 in statuses and set(statuses) <= {200, 429}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["Retry-After"] == "1" and "limit 4" in refused.json()["error"]["message"]


def test_a_client_that_disconnects_cancels_its_generation(server, state, model_id):
    worker = state.models[model_id].worker
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=_long_chat(model_id) | {"stream": True}) as response:
        data_lines = (line for line in response.iter_lines() if line.startswith("data: "))
        for _ in range(10):  # the role chunk, then pieces of text
            next(data_lines)
        assert worker.call(lambda e: e.free_slots) < state.settings.n_slots  # generating now
    _wait_for(lambda: worker.call(lambda e: e.free_slots) == state.settings.n_slots)
    try:
        httpx.post(server.url + "/v1/chat/completions", json=_long_chat(model_id), timeout=0.5)
    except httpx.ReadTimeout:
        pass
    _wait_for(lambda: worker.call(lambda e: e.free_slots) == state.settings.n_slots)


def test_api_keys_guard_v1_but_not_health(settings, state, model_id):
    guarded = ServeSettings(**settings.model_dump() | {"api_keys": ["s3cret"]})
    with LiveServer(create_app(guarded, state=state)) as live:
        assert httpx.get(live.url + "/healthz").status_code == 200
        refused = httpx.get(live.url + "/v1/models")
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert httpx.get(live.url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(live.url + "/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_metrics_report_requests_latency_and_the_prefix_cache(server):
    httpx.post(server.url + "/v1/tasks/toy-intents", json={"input": "hello"})
    text = httpx.get(server.url + "/metrics").text
    for name in ("workhorse_requests_total", "workhorse_request_seconds_bucket", "workhorse_queue_depth",
                 "workhorse_prefix_cache_hit_rate", "workhorse_engine_tokens_total"):
        assert name in text, name
    assert 'route="/v1/tasks/{name}",status="200"' in text


def _wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_the_cli_server_drains_in_flight_requests_on_sigterm(tiny_gguf, tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "workhorse.cli", "serve", "--model", str(tiny_gguf), "--port", str(port), "--threads", "1",
         "--n-slots", "4", "--shutdown-grace-s", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_for(lambda: _ready(url), timeout=60)
        model_id = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.post, url + "/v1/chat/completions", json=_long_chat(model_id, 300), timeout=120)
            time.sleep(0.5)  # the request is generating
            process.send_signal(signal.SIGTERM)
            response = in_flight.result()
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 300
        assert process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/healthz")
    finally:
        if process.poll() is None:
            process.kill()
        output, _ = process.communicate(timeout=60)
    assert "Traceback" not in output, output


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_task_calls_are_logged_and_take_feedback(server):
    answer = httpx.post(server.url + "/v1/tasks/toy-intents", json={"input": "charge back my card"}).json()
    call_id = answer["call_id"]
    logged = httpx.get(f"{server.url}/v1/calls/{call_id}").json()
    assert logged["input"] == "charge back my card" and logged["final_answer"] == answer["answer"]
    assert logged["source"] == "local" and logged["task"] == "toy-intents"
    given = httpx.post(f"{server.url}/v1/calls/{call_id}/feedback", json={"label": "card"})
    assert given.status_code == 200
    assert httpx.get(f"{server.url}/v1/calls/{call_id}").json()["feedback"] == {"label": "card"}
    assert httpx.post(f"{server.url}/v1/calls/999999/feedback", json={"label": "card"}).status_code == 404
    both = httpx.post(f"{server.url}/v1/calls/{call_id}/feedback", json={"label": "card", "fields": {}})
    assert both.status_code == 422 and "exactly one" in both.json()["error"]["message"]


def acknowledged_before_sigkill(tiny_gguf: Path, task_file: Path, call_log: str, *, clients: int = 6,
                                at_least: int = 60) -> list[int]:
    """Start `workhorse serve` with `call_log`, load it from `clients` threads, SIGKILL it once
    `at_least` answers came back; the call ids the clients saw acknowledged."""
    import signal
    import subprocess
    import sys

    from workhorse.bench.serve_bench import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "workhorse.cli", "serve", "--model", str(tiny_gguf), "--port", str(port), "--threads", "1",
         "--task", str(task_file), "--call-log", call_log],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    acknowledged: list[int] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            i = 0
            while not stop.is_set():
                try:
                    response = http.post("/v1/tasks/toy-intents", json={"inputs": [f"ticket {worker}-{i}", f"item {worker}-{i}"]})
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 200:
                    acknowledged.extend(answer["call_id"] for answer in response.json()["answers"])
                i += 1

    try:
        _wait_for(lambda: _ready(url), timeout=120)
        threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
        for thread in threads:
            thread.start()
        _wait_for(lambda: len(acknowledged) >= at_least, timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    return acknowledged


def test_sigkill_under_load_loses_no_acknowledged_call(tiny_gguf, tasks_dir, tmp_path):
    import sqlite3

    db = tmp_path / "calls.db"
    acknowledged = acknowledged_before_sigkill(tiny_gguf, tasks_dir / "toy-intents.yaml", str(db))
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    present = {row[0] for row in connection.execute("SELECT id FROM calls")}
    connection.close()
    assert acknowledged and set(acknowledged) <= present


def test_chat_requests_sharing_a_system_prompt_reuse_its_kv(client, model_id, state):
    system = {"role": "system", "content": "You sort support tickets into refund, login or card. " * 8}
    worker = state.models[model_id].worker
    hits_before = worker.call(lambda e: e.prefix_stats().hits)
    for text in ("where is my refund", "cannot log in", "card blocked"):
        client.chat.completions.create(model=model_id, messages=[system, {"role": "user", "content": text}], max_tokens=3)
    assert worker.call(lambda e: e.prefix_stats().hits) - hits_before >= 2
