"""The ingress of `serve --ray` sends each request to its model's deployment: by the task in the
path, by the model in the body; server-wide answers are merged; names no deployment serves are
answered 404 with every served name."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from workhorse.scale.serve_routing import ServerMap, merge, merge_metrics, route

SERVER = ServerMap(["gemma3-270m", "qwen2.5-coder-0.5b", "minilm-l6"],
                   {"ticket-intents": "gemma3-270m", "ticket-fields": "qwen2.5-coder-0.5b", "app-logs": "qwen2.5-coder-0.5b"},
                   "minilm-l6")


def _body(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_a_task_goes_to_its_models_deployment():
    assert route(SERVER, "POST", "/v1/tasks/ticket-fields", b"{}").model == "qwen2.5-coder-0.5b"
    assert route(SERVER, "GET", "/v1/tasks/ticket-intents", b"").model == "gemma3-270m"
    assert route(SERVER, "GET", "/ui/templates/app-logs", b"").model == "qwen2.5-coder-0.5b"
    assert route(SERVER, "GET", "/ui/review/ticket-fields", b"").model == "qwen2.5-coder-0.5b"


def test_an_unknown_task_is_a_404_naming_every_served_task():
    answer = route(SERVER, "POST", "/v1/tasks/nope", b"{}").answer
    assert answer is not None and answer.status_code == 404
    message = json.loads(answer.body)["error"]["message"]
    assert "'nope' is not served" in message and "app-logs, ticket-fields, ticket-intents" in message
    # The console shows its own page for a task no model serves (one only logged, say).
    assert route(SERVER, "GET", "/ui/review/old-task", b"").model == "gemma3-270m"


def test_an_openai_request_goes_to_the_model_it_names():
    assert route(SERVER, "POST", "/v1/chat/completions", _body(model="qwen2.5-coder-0.5b")).model == "qwen2.5-coder-0.5b"
    assert route(SERVER, "POST", "/v1/embeddings", _body(model="gemma3-270m", input="x")).model == "gemma3-270m"
    assert route(SERVER, "POST", "/v1/embeddings", _body(input="x")).model == "minilm-l6"  # the default embedding model
    unknown = route(SERVER, "POST", "/v1/completions", _body(model="gpt-9", prompt="x")).answer
    assert unknown is not None and unknown.status_code == 404
    assert "use one of: gemma3-270m, qwen2.5-coder-0.5b, minilm-l6" in json.loads(unknown.body)["error"]["message"]
    # Not JSON, or no model: a deployment answers the request's own 422.
    assert route(SERVER, "POST", "/v1/chat/completions", b"{not json").model == "gemma3-270m"
    assert route(SERVER, "POST", "/v1/chat/completions", _body(model=7)).model == "gemma3-270m"


def test_server_wide_answers_are_merged_and_the_rest_goes_to_the_first_model():
    assert route(SERVER, "GET", "/v1/models", b"").merge == "data"
    assert route(SERVER, "GET", "/v1/tasks", b"").merge == "data"
    assert route(SERVER, "GET", "/metrics", b"").merge == "metrics"
    assert route(SERVER, "GET", "/readyz", b"").merge == "ready"
    for path in ("/v1/calls/12", "/ui", "/ui/calls", "/docs", "/healthz"):
        assert route(SERVER, "GET", path, b"").model == "gemma3-270m"
    joined = merge("data", [{"object": "list", "data": [{"id": "a"}]}, {"object": "list", "data": [{"id": "b"}]}])
    assert joined == {"object": "list", "data": [{"id": "a"}, {"id": "b"}]}
    ready = merge("ready", [{"status": "ready", "models": ["a"], "tasks": ["t"]}, {"status": "ready", "models": ["b"], "tasks": []}])
    assert ready == {"status": "ready", "models": ["a", "b"], "tasks": ["t"]}


def test_metrics_of_every_replica_come_as_one_exposition_labelled_by_replica():
    def exposition(requests: int, queue: int) -> str:
        return ("# HELP workhorse_requests_total Requests.\n# TYPE workhorse_requests_total counter\n"
                f'workhorse_requests_total{{route="/v1/tasks/{{name}}",status="200"}} {requests}.0\n'
                "# HELP workhorse_queue_depth Requests in flight.\n# TYPE workhorse_queue_depth gauge\n"
                f'workhorse_queue_depth{{model="m"}} {queue}.0\n')

    text = merge_metrics({"model-a#1": exposition(5, 1), "model-b#2": exposition(7, 0)}).decode()
    assert text.count("# TYPE workhorse_requests_total counter") == 1  # one family, samples of both replicas
    samples = {(s.name, s.labels["replica"]): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples == {("workhorse_requests_total", "model-a#1"): 5.0, ("workhorse_requests_total", "model-b#2"): 7.0,
                       ("workhorse_queue_depth", "model-a#1"): 1.0, ("workhorse_queue_depth", "model-b#2"): 0.0}
