"""Schemathesis fuzzes every operation of the served OpenAPI spec: no input a client can send
gets a 5xx. Real server on loopback, tiny model."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_serve import CLASSIFY_TASK, EMBED_TASK, LiveServer

from workhorse.serve.app import create_app
from workhorse.serve.settings import ServeSettings
from workhorse.serve.state import ServerState


def test_no_generated_request_gets_a_server_error(tiny_gguf, tmp_path):
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if schemathesis is None:
        pytest.fail("schemathesis is not installed: run scripts/setup --test")
    (tmp_path / "intents.yaml").write_text(CLASSIFY_TASK.format(model=tiny_gguf))
    (tmp_path / "embed.yaml").write_text(EMBED_TASK.format(model=tiny_gguf))
    settings = ServeSettings(models=[str(tiny_gguf)], tasks=[str(tmp_path / "intents.yaml"), str(tmp_path / "embed.yaml")],
                             threads=1, n_slots=8, max_tokens_limit=32)
    state = ServerState(settings)
    state.load()
    try:
        with LiveServer(create_app(settings, state=state)) as live:
            run = subprocess.run(
                [schemathesis, "run", live.url + "/openapi.json", "--checks", "not_a_server_error", "--max-examples", "25",
                 "--seed", "7", "--request-timeout", "60"],
                capture_output=True, text=True, timeout=900,
            )
    finally:
        asyncio.run(state.close())
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
