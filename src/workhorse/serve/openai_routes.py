"""`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`.

`response_format` with a JSON schema and `tools` are enforced by constrained decoding, so the
answer parses and validates: a tool call's arguments always fit the tool's parameter schema.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from workhorse.engine import EvalRequest, GenerateRequest, JsonSchemaConstraint, SamplingParams
from workhorse.engine.chat_template import chat_tokens
from workhorse.errors import WorkhorseError
from workhorse.serve.errors import ApiError, error_body, status_for
from workhorse.serve.generation import Generation, TextStream
from workhorse.serve.runtime import Call, call_context
from workhorse.serve.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, SamplingFields, ToolChoice
from workhorse.tasks.embedding_cache import EmbeddingSpace

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = request.app.state.workhorse
    created = int(request.app.state.started_at)
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": "workhorse"} for name in state.models],
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request):
    call = call_context(request, "chat", body.model)
    _refuse_unsupported(body)
    constraint_schema, tool_mode = _output_schema(body)
    if body.stream and tool_mode:
        raise ApiError(400, "streaming with tools is not supported; set stream to false", param="stream")
    model = call.model.worker.model
    messages = _chat_messages(call, body)
    try:  # rendering and tokenizing a long conversation takes a while: not on the event loop
        tokens, prefix_len = await asyncio.to_thread(chat_tokens, model, messages)
    except WorkhorseError:
        raise
    except Exception as error:  # a template that rejects the conversation (e.g. roles out of order)
        raise ApiError(400, f"the model's chat template refused these messages: {error}", param="messages") from None
    # Compiling a schema's grammar can take a while (and a hostile schema longer): not on the event loop.
    request = await asyncio.to_thread(_generate_request, call, body, tokens, constraint_schema)
    request.prefix_len = prefix_len
    stops = _stops(body)
    if constraint_schema is not None:
        # Stop strings do not apply to constrained output: the grammar decides where it ends, and a
        # cut would break the promise that it parses (a `"` inside a JSON string, a `}` in arguments).
        stops = []
    stream = TextStream(call.model.worker, request, stops, on_submit=call.hold)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if body.stream:
        return _sse(call, stream, _chat_chunks(stream, body, completion_id))
    async with call.running():
        result = await call.within_deadline(stream.collect())
    call.count_tokens(completion=result.completion_tokens)
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    finish = result.finish_reason
    if tool_mode and finish == "stop":
        message = _tool_message(result.text)
        finish = "tool_calls" if message["tool_calls"] else "stop"
    elif tool_mode:  # cut short by max_tokens: no half tool call, and no JSON fragment as text
        message = {"role": "assistant", "content": None}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model.name,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _usage(result),
    }


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request):
    call = call_context(request, "completions", body.model)
    _refuse_unsupported(body)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise ApiError(400, "send one prompt per request (a list must hold exactly one string)", param="prompt")
    if body.echo:
        raise ApiError(400, "echo is not supported", param="echo")
    call.check_text(prompts[0], "prompt")
    tokens = await asyncio.to_thread(call.model.worker.model.tokenize, prompts[0])
    stream = TextStream(call.model.worker, _generate_request(call, body, tokens, None), _stops(body), on_submit=call.hold)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    if body.stream:
        return _sse(call, stream, _completion_chunks(stream, call.model.name, completion_id))
    async with call.running():
        result = await call.within_deadline(stream.collect())
    call.count_tokens(completion=result.completion_tokens)
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": call.model.name,
        "choices": [{"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}],
        "usage": _usage(result),
    }


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    call = call_context(request, "embeddings", body.model or request.app.state.workhorse.embedding_model())
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise ApiError(400, "input is empty: send a string or a non-empty list of strings", param="input")
    if len(texts) > call.settings.max_batch_items:
        raise ApiError(413, f"{len(texts)} inputs; the limit is {call.settings.max_batch_items} per request", param="input")
    model = call.model.worker.model
    if body.dimensions is not None and body.dimensions > model.n_embd:
        raise ApiError(400, f"dimensions {body.dimensions} exceeds the model's {model.n_embd}", param="dimensions")
    for i, text in enumerate(texts):
        call.check_text(text, f"input[{i}]" if not isinstance(body.input, str) else "input")
    # Cached texts cost a lookup; the others are evaluated in one batch, each distinct text once.
    space = EmbeddingSpace.of(model, None, pooling="mean", max_tokens=None, dimensions=body.dimensions, normalize=True)
    lookup = call.state.embedding_cache.lookup(space, texts)
    requests = []
    for text, tokens in zip(lookup.missing, await asyncio.to_thread(lambda: [model.tokenize(t) for t in lookup.missing]),
                            strict=True):  # tokenized off the loop
        if len(tokens) > call.settings.n_ctx:
            raise ApiError(400, f"input {texts.index(text)} has {len(tokens)} tokens; the context holds {call.settings.n_ctx}",
                           param="input")
        requests.append(EvalRequest(tokens, pooling="mean"))
    async with call.running():
        work = call.model.worker.submit_evaluate(requests, deadline=call.deadline) if requests else None
        results = await call.within_deadline(call.engine_work(work)) if work else []
    fresh = np.stack([r.pooled for r in results]).astype(np.float32) if results else np.empty((0, model.n_embd), np.float32)
    if body.dimensions:
        fresh = fresh[:, : body.dimensions]
    fresh /= np.maximum(np.linalg.norm(fresh, axis=1, keepdims=True), 1e-12)
    answered = lookup.complete(fresh, [len(r.tokens) for r in requests])
    # Usage counts every input's tokens, cached or not: what the input is, not what it cost.
    n_tokens = sum(e.tokens for e in answered)
    call.count_tokens(prompt=n_tokens)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(e.vector, body.encoding_format)} for i, e in enumerate(answered)
    ]
    # A response already made: FastAPI would otherwise walk every float through its encoder first.
    return JSONResponse({"object": "list", "data": data, "model": call.model.name,
                         "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})


# -- helpers ---------------------------------------------------------------------------------
def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()


def _refuse_unsupported(body: SamplingFields) -> None:
    if body.n != 1:
        raise ApiError(400, "n must be 1: send one request per completion", param="n")
    if body.logprobs:
        raise ApiError(400, "logprobs are not supported", param="logprobs")


def _stops(body: SamplingFields) -> list[str]:
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > 4:
        raise ApiError(400, "at most 4 stop strings", param="stop")
    return stops


def _generate_request(call: Call, body: SamplingFields, tokens: list[int], schema: dict | None) -> GenerateRequest:
    limit = call.settings.max_tokens_limit
    asked = getattr(body, "max_completion_tokens", None) or body.max_tokens
    if asked is not None and asked > limit:
        raise ApiError(400, f"max_tokens {asked} exceeds this server's limit of {limit}", param="max_tokens")
    max_tokens = asked or min(limit, 256)
    if len(tokens) + max_tokens > call.settings.n_ctx:
        raise ApiError(
            400,
            f"the prompt has {len(tokens)} tokens; with max_tokens {max_tokens} that exceeds the context of "
            f"{call.settings.n_ctx}: shorten the prompt or lower max_tokens",
            param="messages",
        )
    constraint = None
    if schema is not None:
        try:
            constraint = JsonSchemaConstraint(call.model.worker.model, schema)
        except Exception as error:  # a schema llguidance cannot compile is the client's to fix
            raise ApiError(400, f"invalid JSON schema: {getattr(error, 'message', error)}", param="response_format") from None
    params = SamplingParams(
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, max_tokens=max_tokens, confidence=True
    )
    call.count_tokens(prompt=len(tokens))
    return GenerateRequest(tokens, params, constraint=constraint)


def _output_schema(body: ChatRequest) -> tuple[dict | None, bool]:
    """The JSON schema the answer must follow, and whether it is a tool call."""
    tools = body.tools or []
    choice = body.tool_choice
    if tools and choice != "none":
        if isinstance(choice, ToolChoice):
            chosen = [t for t in tools if t.function.name == choice.function.name]
            if not chosen:
                raise ApiError(400, f"tool_choice names {choice.function.name!r}, which is not in tools", param="tool_choice")
            tools = chosen
        calls = [
            {
                "type": "object",
                "properties": {"name": {"const": t.function.name}, "arguments": t.function.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in tools
        ]
        if choice in (None, "auto"):
            calls.append(
                {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"], "additionalProperties": False}
            )
        return {"anyOf": calls} if len(calls) > 1 else calls[0], True
    rf = body.response_format
    if rf is None or rf.type == "text":
        return None, False
    if rf.type == "json_object":
        return {"type": "object"}, False
    if rf.json_schema is None or not rf.json_schema.schema_:
        raise ApiError(400, "response_format json_schema needs json_schema.schema", param="response_format")
    return rf.json_schema.schema_, False


def _chat_messages(call: Call, body: ChatRequest) -> list[dict[str, str]]:
    """The conversation as role/content pairs for the template (tools described in the system
    message); each message is held to the per-item size limit."""
    messages = []
    for i, message in enumerate(body.messages):
        if isinstance(message.content, list) and any(part.get("type") != "text" for part in message.content):
            raise ApiError(400, f"messages[{i}]: only text content parts are supported", param=f"messages.{i}.content")
        role = "system" if message.role == "developer" else message.role
        text = message.text()
        if message.role == "tool":
            role, text = "user", f"Tool result ({message.tool_call_id or 'call'}): {text}"
        elif message.tool_calls:
            text = json.dumps([c.get("function", c) for c in message.tool_calls], ensure_ascii=False)
        call.check_text(text, f"messages[{i}].content")
        messages.append({"role": role, "content": text})
    if body.tools and body.tool_choice != "none":
        listing = json.dumps([t.function.model_dump() for t in body.tools], ensure_ascii=False)
        guide = (
            "You can call these tools. To call one, answer with JSON "
            '{"name": <tool name>, "arguments": {...}}' + (', or answer {"content": <text>}' if body.tool_choice in (None, "auto") else "")
            + f".\nTools: {listing}"
        )
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + guide}
        else:
            messages.insert(0, {"role": "system", "content": guide})
    return messages


def _tool_message(text: str) -> dict[str, Any]:
    value = json.loads(text)  # valid: decoded under the schema
    if "content" in value and "name" not in value:
        return {"role": "assistant", "content": value["content"], "tool_calls": None}
    call = {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": value["name"], "arguments": json.dumps(value["arguments"], ensure_ascii=False)},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _usage(result: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def _sse(call: Call, stream: TextStream, events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    call.model.check_room(call.metrics)  # refuse with 429 while a status can still be sent

    async def body() -> AsyncIterator[str]:
        async with call.running():
            try:
                async for event in call.stream_within_deadline(events):
                    yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
            except WorkhorseError as error:  # the 200 has gone: the stream ends with an error event
                status, _ = status_for(error)
                yield f"data: {json.dumps(error_body(status, error.message), ensure_ascii=False)}\n\n"
            finally:
                call.count_tokens(completion=stream.result.completion_tokens)
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _chat_chunks(stream: TextStream, body: ChatRequest, completion_id: str) -> AsyncIterator[dict[str, Any]]:
    created = int(time.time())
    model = body.model

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    yield chunk({"role": "assistant", "content": ""}, None)
    async for piece in stream.pieces():
        yield chunk({"content": piece}, None)
    yield chunk({}, stream.result.finish_reason)
    if (body.stream_options or {}).get("include_usage"):
        yield {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [], "usage": _usage(stream.result)}


async def _completion_chunks(stream: TextStream, model: str, completion_id: str) -> AsyncIterator[dict[str, Any]]:
    created = int(time.time())
    async for piece in stream.pieces():
        yield {"id": completion_id, "object": "text_completion", "created": created, "model": model,
               "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]}
    yield {"id": completion_id, "object": "text_completion", "created": created, "model": model,
           "choices": [{"index": 0, "text": "", "finish_reason": stream.result.finish_reason, "logprobs": None}]}
