"""`workhorse serve --ray local` on a real local Ray Serve: the same answers as a plain `workhorse
serve` for the same task version, the error contract and `/metrics` unchanged."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_serve import CLASSIFY_TASK

pytest.importorskip("ray.serve", reason="the ray extra is not installed")

TEXTS = ["refund please", "cannot login", "card blocked", "my card was charged twice, refund me"]


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(tmp_path: Path, tiny_gguf: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = _port()
    command = [sys.executable, "-m", "workhorse.cli", "serve", "--model", str(tiny_gguf), "--task", str(tmp_path / "toy-intents.yaml"),
               "--port", str(port), "--threads", "1", "--n-ctx", "2048", "--call-log", str(tmp_path / f"calls-{port}.db"), *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
            raise AssertionError(f"the server did not start: {process.stderr.read()[-3000:]}")
        time.sleep(0.5)


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(2)  # Ctrl+C: Ray Serve shuts its replicas down
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
    process.stderr.close()


def test_ray_serve_answers_as_plain_serve_does(tmp_path, tiny_gguf):
    (tmp_path / "toy-intents.yaml").write_text(CLASSIFY_TASK.format(model=tiny_gguf))
    plain, plain_url = _serve(tmp_path, tiny_gguf)
    try:
        expected = httpx.post(f"{plain_url}/v1/tasks/toy-intents", json={"inputs": TEXTS}, timeout=60).json()["answers"]
    finally:
        _stop(plain)
    on_ray, ray_url = _serve(tmp_path, tiny_gguf, "--ray", "local", "--ray-cpus-per-replica", "1")
    try:
        got = httpx.post(f"{ray_url}/v1/tasks/toy-intents", json={"inputs": TEXTS}, timeout=60).json()["answers"]
        unknown = httpx.post(f"{ray_url}/v1/tasks/nope", json={"input": "x"}, timeout=60)
        bad = httpx.post(f"{ray_url}/v1/tasks/toy-intents", json={"inputs": "not a list"}, timeout=60)
        metrics = httpx.get(f"{ray_url}/metrics", timeout=60)
    finally:
        _stop(on_ray)
    assert [a["answer"] for a in got] == [a["answer"] for a in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["version"] == theirs["version"] and mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-4)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 404
    assert bad.status_code == 422 and "error" in bad.json()
    assert metrics.status_code == 200 and "workhorse_requests_total" in metrics.text
