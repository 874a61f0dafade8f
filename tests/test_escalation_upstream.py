"""The upstream client: failure modes through httpx's MockTransport (timeouts, 5xx, malformed
JSON, nonsense token counts, a slow trickle, a dead upstream, a deadline already spent), a
port on loopback that accepts and never answers, and the real thing — a second `workhorse serve`
on loopback answering with a schema-valid JSON object."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from workhorse.escalation.breaker import CircuitBreaker
from workhorse.escalation.upstream import MAX_USAGE_TOKENS, UpstreamClient, UpstreamError
from workhorse.tasks.spec import UpstreamOptions

SCHEMA = {"type": "object", "properties": {"label": {"enum": ["refund", "login"]}}, "required": ["label"],
          "additionalProperties": False}
MESSAGES = [{"role": "user", "content": "I want my money back"}]


def _reply(content: str, status: int = 200) -> httpx.Response:
    body = {"choices": [{"message": {"role": "assistant", "content": content}}], "usage": {"prompt_tokens": 30, "completion_tokens": 5}}
    return httpx.Response(status, json=body)


def _client(handler, **settings) -> UpstreamClient:
    config = UpstreamOptions(base_url="https://upstream.test/v1", model="big", api_key_env="TEST_UPSTREAM_KEY",
                             **({"timeout_s": 2.0, "retries": 2, "backoff_s": 0.01} | settings))
    return UpstreamClient(config, transport=httpx.MockTransport(handler))


def test_a_good_answer_with_usage_and_the_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-test")
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _reply('{"label": "refund"}')

    answer = _client(handler).ask(MESSAGES, SCHEMA)
    assert answer.value == {"label": "refund"} and answer.prompt_tokens == 30 and answer.attempts == 1
    body = json.loads(seen[0].content)
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA and body["model"] == "big"
    assert seen[0].headers["Authorization"] == "Bearer sk-test" and seen[0].url.path == "/v1/chat/completions"


@pytest.mark.parametrize("failure", ["status_503", "malformed", "invalid_for_schema", "connect_error"])
def test_transient_failures_are_retried(failure):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            if failure == "status_503":
                return httpx.Response(503, text="busy")
            if failure == "malformed":
                return httpx.Response(200, text="{not json")
            if failure == "invalid_for_schema":
                return _reply('{"label": "cancel"}')
            raise httpx.ConnectError("refused", request=request)
        return _reply('{"label": "login"}')

    answer = _client(handler).ask(MESSAGES, SCHEMA)
    assert answer.value == {"label": "login"} and answer.attempts == 2


def test_a_client_error_is_not_retried():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    with pytest.raises(UpstreamError, match="401"):
        _client(handler).ask(MESSAGES, SCHEMA)
    assert len(calls) == 1


def test_a_slow_trickle_cannot_outlast_the_budget():
    class Trickle(httpx.SyncByteStream):
        def __iter__(self):
            for byte in b'{"choices": [{"message": {"content": "{\\"label\\": \\"refund\\"}"}}]}' + b" " * 200:
                time.sleep(0.05)  # 10 s per response if nothing stops it
                yield bytes([byte])

    client = _client(lambda request: httpx.Response(200, stream=Trickle()), timeout_s=0.5, retries=5)
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="did not finish in time|out of time"):
        client.ask(MESSAGES, SCHEMA)
    assert time.monotonic() - started < 3  # not 10 s per attempt × 6: the budget covers every attempt


def test_timeouts_end_within_the_budget():
    def handler(request):
        raise httpx.ReadTimeout("slow", request=request)

    started = time.monotonic()
    with pytest.raises(UpstreamError, match="timed out"):
        _client(handler, timeout_s=0.3, backoff_s=0.05, retries=10).ask(MESSAGES, SCHEMA)
    assert time.monotonic() - started < 3  # the backoff alone would sleep 0.05 × (2^10 - 1) s


def test_the_breaker_stops_calling_a_dead_upstream_and_probes_again():
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown_s=10, clock=lambda: now[0])
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 11
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()
    assert breaker.state == "open"
    now[0] = 22
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()

    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(500)

    client = _client(handler, retries=0, breaker_failures=2)
    for _ in range(2):
        with pytest.raises(UpstreamError):
            client.ask(MESSAGES, SCHEMA)
    with pytest.raises(UpstreamError, match="paused"):
        client.ask(MESSAGES, SCHEMA)
    assert len(calls) == 2


ANSWER = '{"label": "refund"}'


def _raw_reply(usage_json: str) -> httpx.Response:
    # Written by hand: json.dumps would refuse Infinity, and an upstream need not be so careful.
    content = json.dumps(ANSWER)
    return httpx.Response(200, content=f'{{"choices": [{{"message": {{"content": {content}}}}}]{usage_json}}}'.encode())


@pytest.mark.parametrize("usage", [
    ', "usage": {"prompt_tokens": "thirty", "completion_tokens": "5"}',  # int("thirty") raised out of ask
    ', "usage": {"prompt_tokens": 100000000000000000000000000000, "completion_tokens": 1e300}',  # past SQLite's range
    ', "usage": {"prompt_tokens": Infinity, "completion_tokens": NaN}',
    ', "usage": {"prompt_tokens": -40, "completion_tokens": 12.5}',
    ', "usage": {"prompt_tokens": true, "completion_tokens": {"n": 5}}',
    ', "usage": "lots"',
    ', "usage": [30, 5]',
    ', "usage": null',
    "",
])
def test_nonsense_token_counts_count_as_unknown_and_the_answer_stands(usage):
    answer = _client(lambda request: _raw_reply(usage)).ask(MESSAGES, SCHEMA)
    assert answer.value == {"label": "refund"} and answer.attempts == 1
    assert (answer.prompt_tokens, answer.completion_tokens) == (0, 0)


def test_sane_token_counts_are_kept_up_to_the_bound():
    usage = f', "usage": {{"prompt_tokens": {MAX_USAGE_TOKENS}, "completion_tokens": 7.0}}'
    answer = _client(lambda request: _raw_reply(usage)).ask(MESSAGES, SCHEMA)
    assert (answer.prompt_tokens, answer.completion_tokens) == (MAX_USAGE_TOKENS, 7)
    assert type(answer.completion_tokens) is int


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,  # nested past the recursion limit: RecursionError, not ValueError
    b'{"choices": [{"message": {"content": "' + b"[" * 100_000 + b'"}}]}',
    b'{"choices": "none"}',
    b"[1, 2]",
])
def test_a_hostile_body_is_an_upstream_error(body):
    with pytest.raises(UpstreamError, match="malformed"):
        _client(lambda request: httpx.Response(200, content=body), retries=1).ask(MESSAGES, SCHEMA)


def test_a_body_that_does_not_decode_is_retried():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:  # claims gzip, is not: httpx raises DecodingError while reading
            return httpx.Response(200, content=b"not gzip at all", headers={"Content-Encoding": "gzip"})
        return _reply(ANSWER)

    assert _client(handler).ask(MESSAGES, SCHEMA).attempts == 2


def test_the_callers_deadline_bounds_the_call():
    budgets = []

    def handler(request):
        budgets.append(request.extensions["timeout"]["read"])
        return _reply(ANSWER)

    client = _client(handler, timeout_s=20.0)
    client.ask(MESSAGES, SCHEMA, deadline=time.monotonic() + 0.5)
    client.ask(MESSAGES, SCHEMA, deadline=time.monotonic() + 3600)  # never more than the budget
    assert 0 < budgets[0] <= 0.5 and 19 < budgets[1] <= 20.0


def test_a_spent_deadline_asks_nothing_and_does_not_trip_the_breaker():
    calls = []

    def handler(request):
        calls.append(1)
        return _reply(ANSWER)

    client = _client(handler, breaker_failures=1)
    for _ in range(3):
        with pytest.raises(UpstreamError, match="no time left"):
            client.ask(MESSAGES, SCHEMA, deadline=time.monotonic() - 0.01)
    assert not calls and client.breaker.state == "closed"
    assert client.ask(MESSAGES, SCHEMA).value == {"label": "refund"}


def test_a_silent_upstream_on_loopback_ends_at_the_deadline():
    """A port that accepts connections and never answers (the benchmark's dead upstream)."""
    import socket

    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        config = UpstreamOptions(base_url=f"http://127.0.0.1:{hole.getsockname()[1]}/v1", model="big",
                                 api_key_env=None, timeout_s=30.0, retries=3, backoff_s=0.01)
        client = UpstreamClient(config)
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="timed out"):
            client.ask(MESSAGES, SCHEMA, deadline=started + 0.3)
        client.close()
    assert time.monotonic() - started < 10  # a hang guard: the budget alone would be 30 s


def test_a_real_workhorse_server_as_the_upstream(tiny_gguf):
    import asyncio

    from test_serve import LiveServer

    from workhorse.serve.app import create_app
    from workhorse.serve.settings import ServeSettings
    from workhorse.serve.state import ServerState

    settings = ServeSettings(models=[str(tiny_gguf)], tasks=[], threads=1, n_slots=4)
    state = ServerState(settings)
    state.load()
    try:
        with LiveServer(create_app(settings, state=state)) as live:
            config = UpstreamOptions(base_url=live.url + "/v1", model=next(iter(state.models)), api_key_env=None)
            client = UpstreamClient(config)
            answers = [client.ask(MESSAGES, SCHEMA) for _ in range(3)]
            client.close()
    finally:
        asyncio.run(state.close())
    for answer in answers:
        assert answer.value["label"] in ("refund", "login") and answer.completion_tokens > 0 and answer.prompt_tokens > 0
