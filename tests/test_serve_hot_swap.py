"""A promoted task version replaces the served one while requests keep coming: none fails, the
requests after the swap answer with the new version, and the call log records each call's version.
A version with a LoRA adapter is served on an engine of its own for that adapter, on the model's
weights, beside the tasks without one; the engine closes when the last version using it retires."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from test_serve import LiveServer, _wait_for
from test_tasks_classify import _write_data
from tiny_model import write_tiny_adapter

from workhorse.calllog import CallLog
from workhorse.engine import Adapter
from workhorse.errors import EngineClosedError
from workhorse.evals.datasets import load_file
from workhorse.serve import state as served_state
from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState
from workhorse.tasks.classify import make_classifier
from workhorse.tasks.engines import adapter_of
from workhorse.tasks.fit import fit, task_for_data
from workhorse.tasks.store import load_task, promote


def test_a_promoted_version_is_served_without_a_restart_and_without_a_failed_request(tiny_gguf, tmp_path):
    data = load_file(_write_data(tmp_path / "train.jsonl", 60, 0))
    for _ in range(2):  # v1 and v2 of the same task
        fit(task_for_data("swapped", data, model=str(tiny_gguf), prompt=None, layers=None), data, _engine(tiny_gguf))
    promote("swapped", 1, reason="served first")
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=["swapped"], threads=1, n_slots=8, task_reload_s=0.2,
                             call_log=str(tmp_path / "calls.db"))
    state = ServerState(settings)
    state.load()
    statuses: list[int] = []
    versions: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                response = client.post(url + "/v1/tasks/swapped", json={"input": "my card is lost today"})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["version"])

    try:
        with LiveServer(create_app(settings, state=state)) as live:
            url = live.url
            clients = [threading.Thread(target=traffic) for _ in range(4)]
            for client in clients:
                client.start()
            _wait_for(lambda: len(versions) >= 20)
            promote("swapped", 2, reason="the gate passed")
            _wait_for(lambda: versions.count(2) >= 20)
            stop.set()
            for client in clients:
                client.join(30)
    finally:
        asyncio.run(state.close())
    assert statuses and set(statuses) == {200}
    assert versions[0] == 1 and versions[-1] == 2
    first_new = versions.index(2)
    assert all(v == 2 for v in versions[first_new + 8:])  # after the swap (and the few already in flight), only v2
    with CallLog.open_readonly(tmp_path / "calls.db") as log:
        logged = {row["task_version"] for row in log.iterate(task="swapped")}
    assert logged == {1, 2}


def _engine(tiny_gguf, adapter: Adapter | None = None):
    from workhorse.engine import Engine, EngineConfig, LlamaModel

    return Engine(LlamaModel(tiny_gguf, name="tiny"), EngineConfig(n_ctx=2048, n_batch=256, n_slots=8, adapter=adapter))


TEXTS = ["my card is lost today", "login error now", "I want a refund please", "the card was declined"]


def _fit(name, data, tiny_gguf, adapter: Adapter | None = None) -> None:
    engine = _engine(tiny_gguf, adapter)
    fit(task_for_data(name, data, model=str(tiny_gguf), prompt=None, layers=None), data, engine)
    engine.close()


def _confidences(name: str, tiny_gguf, adapter: Adapter | None) -> list[float]:
    """The task's answers on an engine with `adapter`, whatever its version needs (a reference)."""
    spec, directory = load_task(name)
    engine = _engine(tiny_gguf, adapter)
    try:
        return [p.confidence for p in make_classifier(spec, directory, engine).classify(TEXTS)]
    finally:
        engine.close()


def test_a_task_with_an_adapter_is_served_beside_one_without_on_the_same_weights(tiny_gguf, tmp_path):
    data = load_file(_write_data(tmp_path / "train.jsonl", 60, 0))
    adapter = Adapter.from_file(write_tiny_adapter(tmp_path / "lora.gguf", ("attn_q", "attn_v", "ffn_down"), size=2.0)[0])
    _fit("plain", data, tiny_gguf)
    _fit("tuned", data, tiny_gguf, adapter)
    _fit("tuned-too", data, tiny_gguf, adapter)  # another task with the same adapter: the same engine
    expected = {"plain": _confidences("plain", tiny_gguf, None), "tuned": _confidences("tuned", tiny_gguf, adapter)}
    without = _confidences("tuned", tiny_gguf, None)  # what the tuned head would say without its adapter
    assert max(abs(a - b) for a, b in zip(expected["tuned"], without)) > 0.05
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=["plain", "tuned", "tuned-too"], threads=1, n_slots=8)
    state = ServerState(settings)
    state.load()
    model = next(iter(state.models.values()))
    assert state.tasks["plain"].engine is model.worker
    tuned_engine = state.tasks["tuned"].engine
    assert tuned_engine is not model.worker and tuned_engine.adapter == adapter and tuned_engine.model is model.worker.model
    assert state.tasks["tuned-too"].engine is tuned_engine and list(model.adapted) == [adapter]
    answers: dict[str, list[list[float]]] = {"plain": [], "tuned": []}
    statuses: list[int] = []

    def traffic(name: str) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(5):
                response = client.post(f"{url}/v1/tasks/{name}", json={"inputs": TEXTS})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answers[name].append([a["confidence"] for a in response.json()["answers"]])

    try:
        with LiveServer(create_app(settings, state=state)) as live:
            url = live.url
            listed = {t["name"]: t for t in httpx.get(url + "/v1/tasks").json()["data"]}
            assert listed["plain"]["adapter"] is None and listed["tuned"]["adapter"] == adapter.short_name
            clients = [threading.Thread(target=traffic, args=(name,)) for name in ("plain", "tuned", "plain", "tuned")]
            for client in clients:
                client.start()
            for client in clients:
                client.join(60)
        asyncio.run(state.tasks["tuned"].close())
        assert list(model.adapted) == [adapter]  # "tuned-too" still uses it
        asyncio.run(state.tasks["tuned-too"].close())
        assert not model.adapted
        with pytest.raises(EngineClosedError):
            tuned_engine.submit_evaluate([])
    finally:
        asyncio.run(state.close())
    assert statuses and set(statuses) == {200} and len(statuses) == 20
    for name, served in answers.items():
        for confidences in served:  # batched with other requests, in float16 KV: close, not equal
            assert confidences == pytest.approx(expected[name], abs=0.01)


def test_a_hot_swap_moves_a_task_onto_its_new_versions_adapter_and_back(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setattr(served_state, "RETIRE_IDLE_S", 0.3)
    data = load_file(_write_data(tmp_path / "train.jsonl", 60, 0))
    adapter = Adapter.from_file(write_tiny_adapter(tmp_path / "lora.gguf", ("attn_q", "attn_v"), size=2.0)[0])
    _fit("swapped", data, tiny_gguf)  # v1: the model as it is
    _fit("swapped", data, tiny_gguf, adapter)  # v2: with the adapter
    _fit("swapped", data, tiny_gguf)  # v3: without it again
    assert adapter_of(load_task("swapped", version=2)[1]) == adapter
    promote("swapped", 1, reason="served first")
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=["swapped"], threads=1, n_slots=8, task_reload_s=0.2)
    state = ServerState(settings)
    state.load()
    model = next(iter(state.models.values()))
    statuses: list[int] = []
    versions: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                response = client.post(url + "/v1/tasks/swapped", json={"input": "my card is lost today"})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["version"])

    try:
        with LiveServer(create_app(settings, state=state)) as live:
            url = live.url
            clients = [threading.Thread(target=traffic) for _ in range(3)]
            for client in clients:
                client.start()
            _wait_for(lambda: len(versions) >= 10)
            assert not model.adapted
            promote("swapped", 2, reason="tuned")
            _wait_for(lambda: versions.count(2) >= 10)
            assert state.tasks["swapped"].engine.adapter == adapter and list(model.adapted) == [adapter]
            adapted_worker = state.tasks["swapped"].engine
            promote("swapped", 3, reason="back to the model as it is")
            _wait_for(lambda: versions.count(3) >= 10)
            assert state.tasks["swapped"].engine is model.worker
            _wait_for(lambda: not model.adapted)  # v2 retired: the last user of the adapter's engine
            _wait_for(lambda: _closed(adapted_worker))  # … which it closes just after (joining its thread)
            stop.set()
            for client in clients:
                client.join(30)
    finally:
        stop.set()  # a failed check above must not leave the clients posting to a stopped server
        asyncio.run(state.close())
    assert statuses and set(statuses) == {200}
    assert versions[0] == 1 and versions[-1] == 3 and {1, 2, 3} <= set(versions)


def _closed(worker) -> bool:
    try:
        worker.submit_evaluate([])
    except EngineClosedError:
        return True
    return False
