"""What the large model is asked: the task's instructions and output type as a chat request with a
JSON Schema, and how its JSON answer maps back to the task's answer."""

from __future__ import annotations

import json
from typing import Any

from workhorse.tasks.spec import TaskSpec


def answer_schema(spec: TaskSpec) -> dict[str, Any]:
    """The JSON Schema the upstream's answer must fit (OpenAI strict mode wants an object)."""
    if spec.kind == "classify":
        labels = spec.label_names
        if spec.classify.out_of_scope is not None and spec.classify.out_of_scope.label not in labels:
            labels = [*labels, spec.classify.out_of_scope.label]
        if spec.classify.multi_label:
            label_list = {"type": "array", "items": {"enum": labels}}
            return {"type": "object", "properties": {"labels": label_list}, "required": ["labels"], "additionalProperties": False}
        return {"type": "object", "properties": {"label": {"enum": labels}}, "required": ["label"], "additionalProperties": False}
    schema = spec.schema_ or {"type": "string"}
    if schema.get("type") == "object":
        return schema
    return {"type": "object", "properties": {"value": schema}, "required": ["value"], "additionalProperties": False}


def messages_for(spec: TaskSpec, text: str) -> list[dict[str, str]]:
    """System: the instructions and the expected output; user: the (already redacted) item."""
    parts = [spec.instructions or spec.description or f"Do the task {spec.name}."]
    if spec.kind == "classify":
        listing = "\n".join(f"- {label.name}" + (f": {label.description}" if label.description else "") for label in spec.labels)
        parts.append(f"Choose the label that fits the input best:\n{listing}")
    parts.append("Answer with JSON only, matching this schema: " + json.dumps(answer_schema(spec), ensure_ascii=False))
    parts.append("Placeholders such as EMAIL_1 or PHONE_2 stand for values withheld for privacy; keep them as they are.")
    return [{"role": "system", "content": "\n\n".join(parts)}, {"role": "user", "content": text}]


def task_answer(spec: TaskSpec, value: dict[str, Any]) -> Any:
    """The task's answer from the upstream's JSON (unwrapping the envelope `answer_schema` added)."""
    if spec.kind == "classify":
        return value["labels"] if spec.classify.multi_label else value["label"]
    schema = spec.schema_ or {"type": "string"}
    return value if schema.get("type") == "object" else value["value"]
