"""Request and response bodies. OpenAI-compatible endpoints accept the OpenAI shapes (unknown
fields are ignored, as OpenAI clients send new ones all the time); options workhorse does not
implement are refused with a 400 that names them rather than silently ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionSpec(_Lenient):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionSpec


class ToolChoiceFunction(_Lenient):
    name: str


class ToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: ToolChoiceFunction


class JsonSchemaFormat(_Lenient):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text; content parts other than text are refused by the route."""
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class SamplingFields(_Lenient):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    logprobs: bool | None = None


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    stream_options: dict[str, Any] | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False


class EmbeddingRequest(_Lenient):
    model: str | None = Field(None, description="A loaded model (default: the server's embedding_model setting, else the "
                              "English encoder minilm-l6 when loaded, else the first model loaded).")
    input: str | list[str] = Field(description="A string or a list of strings (token arrays are not accepted).")
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"


class TaskRequest(_Strict):
    input: str | None = Field(None, description="One item.")
    inputs: list[str] | None = Field(None, description="A batch of items (answers come back in the same order).")
