"""A promoted task version replaces the served one while requests keep coming: none fails, the
requests after the swap answer with the new version, and the call log records each call's version."""

from __future__ import annotations

import asyncio
import threading

import httpx
from test_serve import LiveServer, _wait_for
from test_tasks_classify import _write_data

from workhorse.calllog import CallLog
from workhorse.evals.datasets import load_file
from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState
from workhorse.tasks.fit import fit, task_for_data
from workhorse.tasks.store import promote


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


def _engine(tiny_gguf):
    from workhorse.engine import Engine, EngineConfig, LlamaModel

    return Engine(LlamaModel(tiny_gguf, name="tiny"), EngineConfig(n_ctx=2048, n_batch=256, n_slots=8))


