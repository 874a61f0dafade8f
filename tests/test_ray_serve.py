"""`workhorse serve --ray local` on a real local Ray Serve, two models each on a deployment of its
own: the same answers as a plain `workhorse serve` for the same task versions (a streamed chat
included, chunk by chunk), the merged model and task lists, the error contract, a correction
checked by a replica of the other model, and `/metrics` with every replica's samples."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_serve import CLASSIFY_TASK
from tiny_model import write_tiny_gguf

pytest.importorskip("ray.serve", reason="the ray extra is not installed")

TEXTS = ["refund please", "cannot login", "card blocked", "my card was charged twice, refund me"]


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(tmp_path: Path, models: list[Path], *extra: str) -> tuple[subprocess.Popen, str]:
    port = _port()
    command = [sys.executable, "-m", "workhorse.cli", "serve", "--port", str(port), "--threads", "1", "--n-ctx", "2048",
               "--call-log", str(tmp_path / f"calls-{port}.db"), *extra]
    for model in models:
        command += ["--model", str(model)]
    for task in ("toy-intents", "toy-intents-b"):
        command += ["--task", str(tmp_path / f"{task}.yaml")]
    # Into a file, not a pipe: nobody reads Ray's log lines while the server runs, and a full pipe
    # would stop the server at its next write (its shutdown writes many).
    errors = tmp_path / f"serve-{port}.err"
    with errors.open("w") as sink:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"the server did not start: {errors.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(2)  # Ctrl+C: Ray Serve shuts its replicas down
    try:
        process.wait(120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _asked(url: str, second_model: Path) -> dict:
    """What the tests compare: both tasks' answers, a streamed chat on the second model, and the
    server-wide lists."""
    chat = {"model": second_model.stem, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 24,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat, timeout=60) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
        streamed = (response.status_code, response.headers["content-type"],
                    [json.loads(event)["choices"][0] if event != "[DONE]" else event for event in events])
    return {
        "a": httpx.post(f"{url}/v1/tasks/toy-intents", json={"inputs": TEXTS}, timeout=60).json()["answers"],
        "b": httpx.post(f"{url}/v1/tasks/toy-intents-b", json={"inputs": TEXTS}, timeout=60).json()["answers"],
        "stream": streamed,
        "models": sorted(m["id"] for m in httpx.get(f"{url}/v1/models", timeout=60).json()["data"]),
        "tasks": sorted(t["name"] for t in httpx.get(f"{url}/v1/tasks", timeout=60).json()["data"]),
    }


def test_ray_serve_answers_as_plain_serve_does_with_a_deployment_per_model(tmp_path, tiny_gguf):
    second = write_tiny_gguf(tmp_path / "tiny-b.gguf", seed=1)
    (tmp_path / "toy-intents.yaml").write_text(CLASSIFY_TASK.format(model=tiny_gguf))
    (tmp_path / "toy-intents-b.yaml").write_text(CLASSIFY_TASK.format(model=second).replace("toy-intents", "toy-intents-b"))
    models = [tiny_gguf, second]
    plain, plain_url = _serve(tmp_path, models)
    try:
        expected = _asked(plain_url, second)
    finally:
        _stop(plain)
    on_ray, ray_url = _serve(tmp_path, models, "--ray", "local", "--ray-cpus-per-replica", "1")
    try:
        got = _asked(ray_url, second)
        unknown = httpx.post(f"{ray_url}/v1/tasks/nope", json={"input": "x"}, timeout=60)
        unknown_model = httpx.post(f"{ray_url}/v1/embeddings", json={"model": "gpt-9", "input": "x"}, timeout=60)
        bad = httpx.post(f"{ray_url}/v1/tasks/toy-intents-b", json={"inputs": "not a list"}, timeout=60)
        call_b = got["b"][0]["call_id"]  # logged by the second model's replica, corrected through the first's
        wrong = httpx.post(f"{ray_url}/v1/calls/{call_b}/feedback", json={"label": "nonsense"}, timeout=60)
        right = httpx.post(f"{ray_url}/v1/calls/{call_b}/feedback", json={"label": "refund"}, timeout=60)
        time.sleep(2.5)  # replicas post their metrics each second
        metrics = httpx.get(f"{ray_url}/metrics", timeout=60)
    finally:
        _stop(on_ray)
    for task in ("a", "b"):
        assert [a["answer"] for a in got[task]] == [a["answer"] for a in expected[task]]
        for mine, theirs in zip(got[task], expected[task], strict=True):
            assert mine["version"] == theirs["version"] and mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-4)
    assert got["models"] == expected["models"] == ["tiny", "tiny-b"]
    assert got["tasks"] == expected["tasks"] == ["toy-intents", "toy-intents-b"]
    status, content_type, events = got["stream"]
    assert status == 200 and content_type.startswith("text/event-stream")
    assert events == expected["stream"][2] and len(events) > 3 and events[-1] == "[DONE]"  # chunk by chunk
    assert unknown.status_code == 404 and "toy-intents, toy-intents-b" in unknown.json()["error"]["message"]
    assert unknown_model.status_code == 404 and "use one of" in unknown_model.json()["error"]["message"]
    assert bad.status_code == 422 and "error" in bad.json()
    assert wrong.status_code == 422 and right.status_code == 200 and right.json()["checked"] is True
    assert metrics.status_code == 200 and "workhorse_requests_total" in metrics.text
    replicas = {line.split('replica="', 1)[1].split("#", 1)[0] for line in metrics.text.splitlines() if 'replica="' in line}
    assert replicas == {"model-tiny", "model-tiny-b"}  # one deployment per model
