"""The thread-safe front: many caller threads, one engine thread, merged batches."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from workhorse.engine import EngineConfig, EngineWorker, EvalRequest, GenerateRequest, SamplingParams
from workhorse.errors import ContextFullError

CONFIG = EngineConfig(n_ctx=2048, n_batch=128, n_slots=8, prefix_slots=2, kv_type="f32", flash_attention="off")
TEXTS = ["the refund", "my card", "login error", "hello there", "the king and the ship", "what time is it"] * 4


@pytest.fixture(scope="module")
def worker(tiny_gguf):
    with EngineWorker(tiny_gguf, CONFIG, name="tiny") as worker:
        yield worker


def test_concurrent_callers_get_their_own_answers(worker):
    requests = [EvalRequest(worker.tokenize(t), logits_at=[-1], pooling="mean") for t in TEXTS]
    sequential = [worker.evaluate([r])[0] for r in requests]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda r: worker.evaluate([r])[0], requests))
    for a, b in zip(sequential, concurrent):
        np.testing.assert_allclose(a.logits, b.logits, atol=1e-4)
        np.testing.assert_allclose(a.pooled, b.pooled, atol=1e-4)
    assert worker.call(lambda engine: engine.free_slots) == CONFIG.n_slots


def test_concurrent_generation_joins_one_batch(worker):
    prompts = [worker.tokenize(t) for t in TEXTS[:12]]
    params = SamplingParams(max_tokens=8)
    sequential = [worker.generate([GenerateRequest(p, params)])[0].tokens for p in prompts]
    with ThreadPoolExecutor(12) as pool:
        concurrent = list(pool.map(lambda p: worker.generate([GenerateRequest(p, params)])[0].tokens, prompts))
    assert concurrent == sequential


def test_an_error_reaches_only_its_caller(worker):
    good = EvalRequest(worker.tokenize("hello"), logits_at=[-1])
    bad = EvalRequest([5] * (CONFIG.n_ctx + 10), logits_at=[-1])
    futures = [worker.submit_evaluate([good]), worker.submit_evaluate([bad]), worker.submit_evaluate([good])]
    assert futures[0].result()[0].logits.shape == (1, worker.model.n_vocab)
    with pytest.raises(ContextFullError):
        futures[1].result()
    assert futures[2].result()[0].logits.shape == (1, worker.model.n_vocab)
    too_long = GenerateRequest([5] * 100, SamplingParams(max_tokens=CONFIG.n_ctx))
    with pytest.raises(ContextFullError):
        worker.generate([too_long])


def test_streamed_tokens_add_up_to_the_result(worker):
    streamed: list[int] = []
    request = GenerateRequest(worker.tokenize("the refund"), SamplingParams(max_tokens=12, ignore_eos=True),
                              on_tokens=streamed.extend)
    [result] = worker.generate([request])
    assert streamed == result.tokens and len(streamed) == 12


def test_a_cancelled_generation_frees_its_slot_and_others_go_on(worker):
    import threading
    from concurrent.futures import CancelledError

    started = threading.Event()
    long = GenerateRequest(worker.tokenize("the king"), SamplingParams(max_tokens=1500, ignore_eos=True),
                           on_tokens=lambda _: started.set())
    future = worker.submit_generate([long])
    assert started.wait(30)
    worker.cancel(future)
    with pytest.raises(CancelledError):
        future.result()
    [other] = worker.generate([GenerateRequest(worker.tokenize("hello"), SamplingParams(max_tokens=4, ignore_eos=True))])
    assert len(other.tokens) == 4
    assert worker.call(lambda engine: engine.free_slots) == CONFIG.n_slots


def test_streamed_tokens_include_what_a_grammar_forces_first(worker):
    from workhorse.engine import JsonSchemaConstraint

    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["n"],
              "additionalProperties": False}
    streamed: list[int] = []
    request = GenerateRequest(worker.tokenize("count"), SamplingParams(max_tokens=16),
                              constraint=JsonSchemaConstraint(worker.model, schema), on_tokens=streamed.extend)
    [result] = worker.generate([request])
    assert streamed == result.tokens and worker.model.detokenize(streamed).startswith('{"n":')


def test_a_withdrawn_evaluation_is_dropped_before_it_runs(worker):
    import threading
    from concurrent.futures import CancelledError

    busy, release = threading.Event(), threading.Event()
    blocker = threading.Thread(target=lambda: worker.call(lambda engine: (busy.set(), release.wait(30))))
    blocker.start()
    assert busy.wait(30)  # the engine thread is held: what is queued now is taken together
    future = worker.submit_evaluate([EvalRequest(worker.tokenize("never computed"), logits_at=[-1])])
    worker.cancel(future)
    tokens = []
    release.set()
    blocker.join(30)
    with pytest.raises(CancelledError):
        future.result(timeout=30)
    tokens.append(worker.call(lambda engine: engine.stats.tokens_evaluated))
    worker.evaluate([EvalRequest(worker.tokenize("computed"), logits_at=[-1])])
    tokens.append(worker.call(lambda engine: engine.stats.tokens_evaluated))
    assert tokens[1] - tokens[0] == len(worker.tokenize("computed"))  # only the second evaluation ran


def test_a_cancel_scope_stops_a_thread_of_engine_calls(worker):
    """A batch of sequential generations (a logs task's lines) stops at the next decode step once its
    scope is cancelled, and each later call in the scope refuses at once."""
    import threading

    from workhorse.engine.cancel import CancelScope
    from workhorse.errors import WorkCancelledError

    scope, started, outcome = CancelScope(), threading.Event(), {}
    long = GenerateRequest(worker.tokenize("the king"), SamplingParams(max_tokens=1500, ignore_eos=True),
                           on_tokens=lambda _: started.set())

    def lines() -> None:
        with scope.active():
            try:
                for _ in range(20):
                    worker.generate([long])
                outcome["done"] = True
            except WorkCancelledError:
                outcome["cancelled"] = True

    thread = threading.Thread(target=lines)
    thread.start()
    assert started.wait(30)
    scope.cancel()
    thread.join(30)
    assert outcome == {"cancelled": True}
    assert worker.call(lambda engine: engine.free_slots) == CONFIG.n_slots
    with pytest.raises(WorkCancelledError), scope.active():
        worker.evaluate([EvalRequest(worker.tokenize("late"), logits_at=[-1])])


def test_an_evaluation_waits_for_room_while_generations_hold_every_slot(worker):
    long = GenerateRequest(worker.tokenize("the king"), SamplingParams(max_tokens=200, ignore_eos=True))
    running = worker.submit_generate([long] * CONFIG.n_slots)
    import time

    deadline = time.monotonic() + 30
    while worker.call(lambda engine: engine.free_slots) and time.monotonic() < deadline:
        time.sleep(0.005)
    # Every slot is taken now: the evaluation is not refused, it runs once a generation ends.
    [result] = worker.evaluate([EvalRequest(worker.tokenize("hello"), logits_at=[-1])])
    assert result.logits.shape == (1, worker.model.n_vocab)
    assert len(running.result(60)) == CONFIG.n_slots


def test_a_cancel_scope_tracks_work_that_is_already_done(worker):
    """A future that finished before it was tracked calls back at once, in the tracking thread."""
    from concurrent.futures import Future

    from workhorse.engine.cancel import CancelScope

    scope, done = CancelScope(), Future()
    done.set_result([])
    scope.track(worker, done)  # deadlocked when the callback ran under the scope's own lock
    scope.cancel()
    assert scope.cancelled


def test_prefix_snapshots_give_way_to_a_request_that_needs_their_room(tiny_gguf):
    config = EngineConfig(n_ctx=512, n_batch=128, n_slots=4, prefix_slots=2, flash_attention="off")
    with EngineWorker(tiny_gguf, config, name="tiny") as small:
        prefix = small.tokenize("the king and the ship " * 30)[:200]
        small.evaluate([EvalRequest(prefix + small.tokenize(" x", add_special=False), prefix_len=len(prefix), logits_at=[-1])])
        assert small.call(lambda engine: engine.prefix_cache.tokens) >= 200  # a snapshot holds 200 cells
        big = GenerateRequest(small.tokenize("hello " * 60)[:100], SamplingParams(max_tokens=350, ignore_eos=True))
        [result] = small.generate([big])  # needs 450 of 512 cells: the snapshot makes way
        assert len(result.tokens) == 350


def test_an_urgent_evaluation_goes_before_a_long_batch_queued_first(worker):
    # The engine thread is held while a long batch without a deadline and then a short request
    # whose deadline is near are queued: the short one is answered first.
    import threading

    long_text = " ".join(["the king and the ship sailed to the river city"] * 10)
    long_batch = [EvalRequest(worker.tokenize(long_text), pooling="mean") for _ in range(60)]
    finished: list[str] = []
    busy, release = threading.Event(), threading.Event()
    blocker = threading.Thread(target=lambda: worker.call(lambda engine: (busy.set(), release.wait(30))))
    blocker.start()
    assert busy.wait(30)
    bulk = worker.submit_evaluate(long_batch)
    urgent = worker.submit_evaluate([EvalRequest(worker.tokenize("my card"), pooling="mean")], deadline=time.monotonic() + 5)
    later = worker.submit_evaluate([EvalRequest(worker.tokenize("login"), pooling="mean")], deadline=time.monotonic() + 60)
    for name, future in (("bulk", bulk), ("urgent", urgent), ("later", later)):
        future.add_done_callback(lambda _, name=name: finished.append(name))
    release.set()
    blocker.join(30)
    assert len(bulk.result(timeout=60)) == 60 and urgent.result(timeout=60) and later.result(timeout=60)
    assert finished == ["urgent", "later", "bulk"]
    # Evaluated in slices, the long batch's answers are what it gets alone.
    alone = worker.evaluate(long_batch[:1])[0]
    np.testing.assert_allclose(bulk.result()[0].pooled, alone.pooled, atol=1e-4)


def test_a_long_batch_is_sliced_by_the_tokens_it_decodes():
    from concurrent.futures import Future

    from workhorse.engine.worker import _EvalJob, _slice

    def job(n: int, prefix: int = 0) -> _EvalJob:
        return _EvalJob([EvalRequest(list(range(n)), prefix_len=prefix)], Future())

    jobs = [job(200), job(200), job(200), job(900), job(300, prefix=250)]
    first, rest = _slice(jobs, 512)
    assert first == jobs[:2] and rest == jobs[2:]
    second, rest = _slice(rest, 512)
    assert second == jobs[2:3]  # 200 + 900 would not fit
    third, rest = _slice(rest, 512)
    assert third == jobs[3:4]  # alone: longer than a slice
    assert _slice(rest, 512) == (jobs[4:], [])  # 50 tokens after its cached prefix
