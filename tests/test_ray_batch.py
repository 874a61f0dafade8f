"""`workhorse run --ray local` on a real local Ray (two actors on this machine's cores): the same
answers as a plain run, each id once in the output and in the call log, a rerun skipping what is
done, and an actor killed with SIGKILL mid-job losing no item and answering none twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_serve import CLASSIFY_TASK

from workhorse.calllog import CallLog

pytest.importorskip("ray", reason="the ray extra is not installed")


def _items(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": f"ticket {i}: my card, a refund of {i * 7} and a login"}) + "\n"
                            for i in range(n)))
    return path


def _workhorse(*args: str, env: dict[str, str] | None = None, errors: Path | None = None):
    """Run the CLI to its end; with `errors`, start it and return, its stderr going to that file
    (a pipe nobody reads while it runs would stop it once full)."""
    command = [sys.executable, "-m", "workhorse.cli", *args]
    environment = os.environ | (env or {})
    if errors is not None:
        with errors.open("w") as sink:
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink, env=environment)
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)


def _answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def task(tmp_path, tiny_gguf) -> Path:
    path = tmp_path / "toy-intents.yaml"
    path.write_text(CLASSIFY_TASK.format(model=tiny_gguf))
    return path


def test_ray_answers_as_a_plain_run_does_and_resumes(task, tmp_path):
    items = _items(tmp_path / "items.jsonl", 300)
    plain = _workhorse("run", str(task), str(items), "-o", str(tmp_path / "plain.jsonl"), "--threads", "1", "--batch", "16",
                       "--call-log", str(tmp_path / "plain.db"))
    assert plain.returncode == 0, plain.stderr
    on_ray = _workhorse("run", str(task), str(items), "-o", str(tmp_path / "ray.jsonl"), "--ray", "local", "--actors", "2",
                        "--cpus-per-actor", "1", "--batch", "16", "--call-log", str(tmp_path / "ray.db"))
    assert on_ray.returncode == 0, on_ray.stderr
    expected = {a["id"]: a for a in _answers(tmp_path / "plain.jsonl")}
    got = _answers(tmp_path / "ray.jsonl")
    assert sorted(a["id"] for a in got) == sorted(expected)  # each id once
    for answer in got:  # the same batches as the plain run's: the same answers and numbers
        twin = expected[answer["id"]]
        assert answer["answer"] == twin["answer"]
        # to float32 rounding: each actor's KV cache has had other batches before (its cells differ)
        assert answer["probabilities"] == pytest.approx(twin["probabilities"], abs=1e-6)
    with CallLog.open_readonly(tmp_path / "ray.db") as log:
        refs = Counter(call["request_ref"] for call in log.iterate())
    assert len(refs) == 300 and set(refs.values()) == {1}

    _items(items, 320)  # 20 more rows: a rerun answers only those
    again = _workhorse("run", str(task), str(items), "-o", str(tmp_path / "ray.jsonl"), "--ray", "local",
                       "--call-log", str(tmp_path / "ray.db"))
    assert again.returncode == 0, again.stderr
    assert "20 answered" in again.stderr and "300 already done" in again.stderr
    assert len(_answers(tmp_path / "ray.jsonl")) == 320


def test_an_actor_killed_mid_job_loses_no_item_and_answers_none_twice(task, tmp_path):
    items = _items(tmp_path / "items.jsonl", 4000)
    out, pids = tmp_path / "ray.jsonl", tmp_path / "actors.pids"
    job = _workhorse("run", str(task), str(items), "-o", str(out), "--ray", "local", "--actors", "2", "--cpus-per-actor", "1",
                     "--batch", "8", "--call-log", str(tmp_path / "calls.db"), env={"WORKHORSE_RAY_PID_FILE": str(pids)},
                     errors=tmp_path / "job.err")
    try:
        deadline = time.monotonic() + 300
        while not (out.is_file() and len(out.read_text().splitlines()) >= 400):
            assert job.poll() is None, (tmp_path / "job.err").read_text()
            assert time.monotonic() < deadline, "the job wrote nothing"
            time.sleep(0.1)
        victim = int(pids.read_text().split()[0])
        os.kill(victim, signal.SIGKILL)
        assert job.wait(600) == 0, (tmp_path / "job.err").read_text()
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    ids = Counter(answer["id"] for answer in _answers(out))
    assert len(ids) == 4000 and set(ids.values()) == {1}
    with CallLog.open_readonly(tmp_path / "calls.db") as log:
        refs = Counter(call["request_ref"] for call in log.iterate())
    assert len(refs) == 4000 and set(refs.values()) == {1}
