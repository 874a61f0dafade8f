"""Who may receive a task's API key: an upstream over https, or on loopback, unless the task says
`allow_insecure`; a URL given on the command line gets the task's key only on the task's own
upstream (scheme, host and port), else only a key the command line names. Checked on the
options, on the client, and over the wire: a small OpenAI-compatible server on loopback records
the Authorization header each `eval --escalate` request carried."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from workhorse.cli import app
from workhorse.errors import TaskSpecError
from workhorse.escalation.override import command_line_upstream
from workhorse.escalation.upstream import UpstreamClient
from workhorse.tasks.spec import UpstreamOptions
from workhorse.tasks.store import load_task, parse_task

KEY_ENV, OTHER_ENV = "WH_TEST_TASK_KEY", "WH_TEST_OTHER_KEY"


@pytest.mark.parametrize("url", [
    "https://api.example.com/v1", "http://127.0.0.1:8080/v1", "http://127.3.4.5/v1", "http://localhost:11434/v1",
    "http://LOCALHOST/v1", "http://[::1]:8080/v1",
])
def test_https_or_loopback_is_accepted(url):
    assert UpstreamOptions(base_url=url, model="big").base_url == url


@pytest.mark.parametrize("url", [
    "http://api.example.com/v1", "http://10.0.0.5:8000/v1", "http://127.0.0.1.example.com/v1", "http://0.0.0.0/v1",
    "http://localhost.example.com/v1", "ftp://127.0.0.1/v1", "api.example.com/v1", "https:///v1",
])
def test_plain_http_elsewhere_is_refused(url):
    with pytest.raises(ValidationError, match="http"):
        UpstreamOptions(base_url=url, model="big")


def test_allow_insecure_is_the_tasks_explicit_choice():
    assert UpstreamOptions(base_url="http://10.0.0.5:8000/v1", model="big", allow_insecure=True).allow_insecure
    assert UpstreamOptions.model_fields["allow_insecure"].description  # documented where the task's fields are
    with pytest.raises(TaskSpecError, match="allow_insecure"):
        parse_task(TASK.format(model="tiny.gguf", url="http://10.0.0.5:8000/v1", key_env=KEY_ENV))


def test_the_client_checks_again_what_a_copy_skipped(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-task")
    sent = []
    options = UpstreamOptions(base_url="https://api.example.com/v1", model="big", api_key_env=KEY_ENV)
    swapped = options.model_copy(update={"base_url": "http://attacker.example/v1"})  # no validation on a copy
    with pytest.raises(TaskSpecError, match="plain http"):
        UpstreamClient(swapped, transport=httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500)))
    assert not sent


def _configured(**changes) -> UpstreamOptions:
    return UpstreamOptions.model_validate({"base_url": "https://api.example.com/v1", "model": "big", "api_key_env": KEY_ENV,
                                           "timeout_s": 7.0, "retries": 4} | changes)


@pytest.mark.parametrize(("url", "keeps_key"), [
    ("https://api.example.com/v2", True),  # the same origin, another path
    ("https://API.example.com:443/v1", True),  # the default port, written out
    ("https://other.example.com/v1", False),
    ("https://api.example.com:8443/v1", False),  # another port is another server
    ("http://127.0.0.1:8080/v1", False),
])
def test_a_command_line_url_gets_the_tasks_key_only_on_the_tasks_origin(url, keeps_key):
    options = command_line_upstream(_configured(), base_url=url, model=None, api_key_env=None, option="--upstream-url")
    assert options.base_url == url and options.model == "big"
    assert options.api_key_env == (KEY_ENV if keeps_key else None)
    assert (options.timeout_s, options.retries) == (7.0, 4)  # the rest of the task's settings carry over


def test_a_key_the_command_line_names_goes_anywhere_it_may():
    options = command_line_upstream(_configured(), base_url="https://other.example.com/v1", model="m",
                                    api_key_env=OTHER_ENV, option="--upstream-url")
    assert options.api_key_env == OTHER_ENV and options.model == "m"
    fresh = command_line_upstream(None, base_url="https://other.example.com/v1", model="m", api_key_env=None,
                                  option="--upstream-url", fresh={"timeout_s": 60.0})
    assert fresh.api_key_env is None and fresh.timeout_s == 60.0  # not the OPENAI_API_KEY default


def test_the_tasks_allow_insecure_does_not_travel_either():
    insecure = _configured(base_url="http://10.0.0.5:8000/v1", allow_insecure=True)
    assert command_line_upstream(insecure, base_url=None, model="m2", api_key_env=None, option="x").allow_insecure
    with pytest.raises(TaskSpecError, match="--upstream-url: .*plain http"):
        command_line_upstream(insecure, base_url="http://10.0.0.6:8000/v1", model=None, api_key_env=None,
                              option="--upstream-url")


# -- over the wire ----------------------------------------------------------------------------------

TASK = """
name: keyed-intents
kind: classify
model: {model}
labels: [{{name: refund}}, {{name: login}}]
escalation:
  privacy: allow
  upstream: {{base_url: "{url}", model: big, api_key_env: {key_env}, timeout_s: 20, retries: 0}}
"""


class _Recorder(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that answers the schema's first label and records the
    Authorization header of every request."""

    seen: list[str | None]

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(self.headers.get("Authorization"))
        label = body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"][0]
        reply = json.dumps({"choices": [{"message": {"content": json.dumps({"label": label})}}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorders() -> Iterator[list[tuple[str, list[str | None]]]]:
    """Two upstreams on loopback, on two ports: two origins."""
    servers = []
    for _ in range(2):
        handler = type("Recorder", (_Recorder,), {"seen": []})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, handler))
    yield [(f"http://127.0.0.1:{server.server_address[1]}/v1", handler.seen) for server, handler in servers]
    for server, _ in servers:
        server.shutdown()
        server.server_close()


def _labelled(tmp_path: Path) -> Path:
    data = tmp_path / "labelled.jsonl"
    rows = [{"text": f"{word} request number {i}", "label": word} for i in range(4) for word in ("refund", "login")]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return data


def _eval(task: Path, data: Path, *options: str):
    return CliRunner().invoke(app, ["eval", str(task), str(data), "--json", "--latency-sample", "1", "--escalate",
                                    "--max-rate", "0.5", *options])


def test_eval_sends_the_tasks_key_to_the_tasks_upstream_only(recorders, tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-task")
    monkeypatch.setenv(OTHER_ENV, "sk-other")
    (task_url, task_seen), (other_url, other_seen) = recorders
    task = tmp_path / "keyed-intents.yaml"
    task.write_text(TASK.format(model=tiny_gguf, url=task_url, key_env=KEY_ENV))
    data = _labelled(tmp_path)

    result = _eval(task, data)  # the task's own upstream
    assert result.exit_code == 0, result.output
    assert task_seen and set(task_seen) == {"Bearer sk-task"}

    result = _eval(task, data, "--upstream-url", task_url.replace("/v1", "/v1/"))  # the same origin
    assert result.exit_code == 0, result.output
    assert set(task_seen) == {"Bearer sk-task"}

    result = _eval(task, data, "--upstream-url", other_url)  # another port: no key
    assert result.exit_code == 0, result.output
    assert other_seen and set(other_seen) == {None}

    other_seen.clear()
    result = _eval(task, data, "--upstream-url", other_url, "--upstream-key-env", OTHER_ENV)
    assert result.exit_code == 0, result.output
    assert other_seen and set(other_seen) == {"Bearer sk-other"}


def test_eval_refuses_plain_http_to_another_host(tiny_gguf, tmp_path):
    task = tmp_path / "keyed-intents.yaml"
    task.write_text(TASK.format(model=tiny_gguf, url="https://api.example.com/v1", key_env=KEY_ENV))
    result = _eval(task, _labelled(tmp_path), "--upstream-url", "http://api.example.com/v1")
    assert result.exit_code != 0 and "plain http" in str(result.exception)


def test_calibrate_saves_no_key_for_another_host_unless_named(tiny_gguf, tmp_path):
    task = tmp_path / "keyed-intents.yaml"
    task.write_text(TASK.format(model=tiny_gguf, url="https://api.example.com/v1", key_env=KEY_ENV))
    data = _labelled(tmp_path)

    def calibrate(*options: str):
        result = CliRunner().invoke(app, ["tasks", "calibrate", str(task), str(data), "--rate", "0.25", *options])
        assert result.exit_code == 0, result.output
        return load_task("keyed-intents")[0].escalation.upstream  # the version calibrate saved

    assert calibrate("--model", "bigger").api_key_env == KEY_ENV  # the task's upstream, another model
    moved = calibrate("--base-url", "http://127.0.0.1:9/v1")
    assert moved.api_key_env is None and moved.timeout_s == 20 and moved.model == "big"
    assert calibrate("--base-url", "http://127.0.0.1:9/v1", "--api-key-env", OTHER_ENV).api_key_env == OTHER_ENV
