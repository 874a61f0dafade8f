"""Where a request to `serve --ray` goes: the deployment of the model it needs.

Each model runs as a deployment of its own (its replicas scale apart from the other models'), so
the ingress decides from the request which model it needs: a task's route names the task, whose
model is known; an OpenAI route names the model in its body. Requests about the whole server
(the model and task lists, readiness, `/metrics`) go to every model and their answers are merged.
Everything else (the call log's routes, the console's pages, the API docs) goes to the first
model's deployment: every replica shares the call log and the task store.

Pure logic, without Ray, so that the routing is tested on its own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from workhorse.errors import TaskNotFoundError, UnknownModelError
from workhorse.serve.errors import answer_for

MODEL_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
TASK_PREFIXES = ("/v1/tasks/", "/ui/review/", "/ui/templates/")
# Answers about the whole server: every model's answer, merged (see `merge`).
MERGED = {"/v1/models": "data", "/v1/tasks": "data", "/readyz": "ready", "/metrics": "metrics"}


@dataclass(frozen=True)
class ServerMap:
    """The served models (in the settings' order) and the model each task runs on."""

    models: list[str]
    tasks: dict[str, str]
    embedding_model: str

    def to_json(self) -> str:
        return json.dumps({"models": self.models, "tasks": self.tasks, "embedding_model": self.embedding_model})

    @classmethod
    def from_json(cls, text: str) -> ServerMap:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Route:
    """One model's deployment (`model`), every model's (`merge` names how), or an answer the
    ingress gives itself (`answer`: a name no deployment serves)."""

    model: str | None = None
    merge: str | None = None
    answer: JSONResponse | None = None


def route(server: ServerMap, method: str, path: str, body: bytes) -> Route:
    if method == "GET" and path in MERGED:
        return Route(merge=MERGED[path])
    for prefix in TASK_PREFIXES:
        if path.startswith(prefix):
            name = path[len(prefix):].split("/", 1)[0]
            if name in server.tasks:
                return Route(model=server.tasks[name])
            if prefix == "/v1/tasks/" and name:
                known = ", ".join(sorted(server.tasks)) or "none"
                return Route(answer=answer_for(TaskNotFoundError(f"task {name!r} is not served", f"served tasks: {known}")))
            return Route(model=server.models[0])  # the console answers for a task no model serves
    if method == "POST" and path in MODEL_ROUTES:
        named = _model_named(body)
        if named is None and path == "/v1/embeddings":
            named = server.embedding_model
        if named is None:  # no model, or not JSON: any deployment answers the request's 422
            return Route(model=server.models[0])
        if named not in server.models:
            return Route(answer=answer_for(UnknownModelError(f"model {named!r} is not loaded",
                                                             f"use one of: {', '.join(server.models)}")))
        return Route(model=named)
    return Route(model=server.models[0])


def _model_named(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    model = value.get("model") if isinstance(value, dict) else None
    return model if isinstance(model, str) else None


def merge(kind: str, answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One JSON answer from every model's: their `data` lists joined, or readiness (every model ready)."""
    if kind == "data":
        return {"object": "list", "data": [item for answer in answers for item in answer.get("data", [])]}
    return {"status": "ready", "models": [m for answer in answers for m in answer.get("models", [])],
            "tasks": [t for answer in answers for t in answer.get("tasks", [])]}


def merge_metrics(expositions: dict[str, str]) -> bytes:
    """Every replica's Prometheus exposition as one, each sample labelled with its `replica`
    (a scrape of the whole deployment: `sum by (...)` over replicas gives the server's totals)."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Any] = {}
    for replica, text in sorted(expositions.items()):
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, family)
            labelled = [sample._replace(labels={**sample.labels, "replica": replica}) for sample in family.samples]
            if merged is family:
                family.samples = labelled
            else:
                merged.samples.extend(labelled)

    class _Parsed:
        def collect(self) -> list[Any]:
            return list(families.values())

    return generate_latest(_Parsed())  # type: ignore[arg-type]
