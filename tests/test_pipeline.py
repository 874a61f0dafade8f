"""The pipeline: the small model answers, the uncertain items go upstream with secrets redacted,
every call is logged — the tiny model locally, the upstream captured through httpx's
MockTransport (to see exactly what left the machine). The escalation budget counts from the
items' arrival, and whatever token counts the upstream reports, the batch is answered and logged."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from workhorse.calllog import CallLog
from workhorse.calllog.prices import PriceTable
from workhorse.engine import Engine, EngineConfig
from workhorse.escalation.upstream import UpstreamClient
from workhorse.pipeline import Pipeline, build_pipeline
from workhorse.tasks.kinds import open_local_task
from workhorse.tasks.spec import UpstreamOptions
from workhorse.tasks.store import parse_task

TASK = """
name: esc-intents
kind: classify
model: {model}
instructions: Classify the support ticket.
labels: [{{name: refund}}, {{name: login}}, {{name: card}}]
classify: {{mode: score, score_temperature: 50}}  # confidences near 1/3, so every answer is below the 0.99 threshold
escalation:
  mode: {mode}
  threshold: 0.99
  privacy: {privacy}
  upstream: {{base_url: "https://upstream.test/v1", model: gpt-4o-mini, api_key_env: null, timeout_s: 2, retries: 1}}
"""
TEXTS = ["refund to jane.doe@example.com please, card 4111 1111 1111 1111", "cannot login from 10.1.2.3",
         "my card +1 (415) 555-0132 was blocked"]
PLANTED = ["jane.doe@example.com", "4111 1111 1111 1111", "10.1.2.3", "555-0132"]


@pytest.fixture(scope="module")
def engine(tiny_model):
    engine = Engine(tiny_model, EngineConfig(n_ctx=2048, n_batch=256, n_slots=8, prefix_slots=2, n_threads=1))
    yield engine
    engine.close()


def _runner(engine, tiny_gguf, handler, log=None, mode="always", privacy="redact", timeout_s=2.0) -> Pipeline:
    spec = parse_task(TASK.format(model=tiny_gguf, mode=mode, privacy=privacy))
    options = UpstreamOptions(base_url="https://upstream.test/v1", model="gpt-4o-mini", api_key_env=None,
                              timeout_s=timeout_s, retries=1, backoff_s=0.01)
    client = UpstreamClient(options, transport=httpx.MockTransport(handler))
    return build_pipeline(spec, None, engine, call_log=log, upstream=client, prices=PriceTable())


class _SlowLocal:
    """The task's kind, answering `delay_s` late: a busy engine."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.spec, self.delay_s = inner, inner.spec, delay_s

    def run(self, texts):
        time.sleep(self.delay_s)
        return self.inner.run(texts)


def test_escalated_items_leave_redacted_and_come_back_answered_and_logged(engine, tiny_gguf, tmp_path):
    received = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        received.append(body)
        # The upstream echoes a placeholder back in its answer: it must be restored.
        content = json.dumps({"label": "card"})
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}],
                                         "usage": {"prompt_tokens": 120, "completion_tokens": 6}})

    log = CallLog(tmp_path / "calls.db")
    runner = _runner(engine, tiny_gguf, handler, log)
    answers = runner.run(TEXTS)
    runner.close()
    assert [a.answer for a in answers] == ["card"] * 3
    assert all(a.source == "upstream" and a.escalation_reason == "always" for a in answers)
    sent = json.dumps(received)
    for secret in PLANTED:
        assert secret not in sent
    assert "EMAIL_1" in sent and "CARD_1" in sent and "IP_1" in sent
    assert received[0]["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == ["refund", "login", "card"]
    rows = list(log.iterate())
    log.close()
    assert [r["id"] for r in rows] == [a.call_id for a in answers]
    first = rows[0]
    assert first["escalated"] and first["source"] == "upstream" and first["final_answer"] == "card"
    assert first["upstream_model"] == "gpt-4o-mini" and first["upstream_prompt_tokens"] == 120
    assert first["upstream_cost"] == pytest.approx((120 * 0.15 + 6 * 0.60) / 1e6)
    assert first["redactions"] == {"EMAIL": 1, "CARD": 1} and first["input"] == TEXTS[0]  # the log stays local


def test_a_failing_upstream_leaves_the_small_models_answer_flagged(engine, tiny_gguf, tmp_path):
    log = CallLog(tmp_path / "calls.db")
    runner = _runner(engine, tiny_gguf, lambda request: httpx.Response(503), log)
    answers = runner.run(TEXTS)
    runner.close()
    assert all(a.source == "local" and a.details["escalation_failed"] for a in answers)
    assert all(a.answer in ("refund", "login", "card") and a.confidence is not None for a in answers)
    assert all(r["escalation_failed"] and r["source"] == "local" for r in log.iterate())
    log.close()


def test_local_only_never_sends_and_threshold_mode_sends_only_the_unsure(engine, tiny_gguf):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(200, json={"choices": [{"message": {"content": '{"label": "login"}'}}]})

    blocked = _runner(engine, tiny_gguf, handler, privacy="local_only").run(TEXTS)
    assert not calls and all(a.details["escalation_blocked"] == "local_only" for a in blocked)
    unsure = _runner(engine, tiny_gguf, handler, mode="threshold").run(TEXTS)  # threshold 0.99: all unsure here
    assert len(calls) == sum(a.source == "upstream" for a in unsure) == 3


def test_no_planted_secret_of_the_corpus_reaches_the_upstream(engine, tiny_gguf):
    """The 220-item English and Chinese planted-secrets corpus through the whole escalation path:
    everything the upstream received is captured and searched for every planted value."""
    import re

    from test_privacy import CORPUS, NUMERIC_FIELDS

    received: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request.content.decode())
        return httpx.Response(200, json={"choices": [{"message": {"content": '{"label": "refund"}'}}]})

    runner = _runner(engine, tiny_gguf, handler, timeout_s=60.0)  # 220 items: the budget is not under test here
    answers = runner.run([item.text for item in CORPUS])
    runner.close()
    assert len(received) == len(CORPUS) and all(a.source == "upstream" for a in answers)
    everything = "\n".join(received)
    for item in CORPUS:
        for field, _, value in item.values:
            assert value not in everything, f"{field} {value!r} leaked"
            if field in NUMERIC_FIELDS:  # not even with its separators removed
                assert re.sub(r"[^0-9]", "", value) not in everything, f"{field} {value!r} leaked as digits"


def test_each_logged_call_estimates_its_upstream_request(engine, tiny_gguf, tmp_path):
    from workhorse.escalation.request import messages_for

    log = CallLog(tmp_path / "calls.db")
    spec = parse_task(TASK.format(model=tiny_gguf, mode="never", privacy="redact"))
    words = lambda text: len(text.split())  # noqa: E731 - any counter will do
    runner = Pipeline(open_local_task(spec, None, engine), model="tiny", call_log=log, count_tokens=words)
    runner.run(TEXTS)
    runner.close()
    system = messages_for(spec, "")[0]["content"]
    assert [r["upstream_prompt_estimate"] for r in log.iterate()] == [words(system) + words(t) for t in TEXTS]
    log.close()


def test_nonsense_token_counts_neither_fail_the_batch_nor_the_call_log(engine, tiny_gguf, tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        body = b'{"choices": [{"message": {"content": "{\\"label\\": \\"card\\"}"}}], ' \
               b'"usage": {"prompt_tokens": 100000000000000000000000000000, "completion_tokens": "many"}}'
        return httpx.Response(200, content=body)

    log = CallLog(tmp_path / "calls.db")
    runner = _runner(engine, tiny_gguf, handler, log)
    answers = runner.run(TEXTS)
    runner.close()
    assert [a.source for a in answers] == ["upstream"] * 3 and [a.answer for a in answers] == ["card"] * 3
    rows = list(log.iterate())
    log.close()
    assert [r["id"] for r in rows] == [a.call_id for a in answers]
    assert all(r["upstream_prompt_tokens"] == 0 and r["upstream_completion_tokens"] == 0 for r in rows)


def test_the_escalation_budget_counts_from_arrival(engine, tiny_gguf):
    """The local answer spends part of the budget; one that spends all of it asks nothing."""
    budgets = []

    def handler(request: httpx.Request) -> httpx.Response:
        budgets.append(request.extensions["timeout"]["read"])
        return httpx.Response(200, json={"choices": [{"message": {"content": '{"label": "card"}'}}]})

    runner = _runner(engine, tiny_gguf, handler, timeout_s=2.0)
    runner.local = _SlowLocal(runner.local, 0.4)
    assert all(a.source == "upstream" for a in runner.run(TEXTS[:2]))
    runner.close()
    assert len(budgets) == 2 and all(0 < budget <= 1.6 for budget in budgets)  # not 2 s from the upstream call

    runner = _runner(engine, tiny_gguf, handler, timeout_s=0.2)
    runner.local = _SlowLocal(runner.local, 0.3)
    answers = runner.run(TEXTS[:2])
    runner.close()
    assert len(budgets) == 2 and all(a.source == "local" and a.details["escalation_failed"] for a in answers)
    assert runner.upstream is not None and runner.upstream.breaker.state == "closed"


def test_the_escalation_budget_counts_from_the_items_arrival(engine, tiny_gguf):
    """Items that waited in a server's queue longer than the budget are not sent upstream at all."""
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(200, json={"choices": [{"message": {"content": '{"label": "login"}'}}]})

    runner = _runner(engine, tiny_gguf, handler, timeout_s=2.0)
    late = runner.run(TEXTS, arrived=time.monotonic() - 5.0)
    assert not calls and all(a.source == "local" and a.details["escalation_failed"] for a in late)
    on_time = runner.run(TEXTS, arrived=time.monotonic())
    runner.close()
    assert len(calls) == 3 and all(a.source == "upstream" for a in on_time)
