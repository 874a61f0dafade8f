"""Render a GGUF chat template (Jinja) the way Hugging Face tokenizers do, and tokenize a conversation
through it without letting the messages write control tokens."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import jinja2
import jinja2.sandbox

if TYPE_CHECKING:
    from workhorse.engine.model import LlamaModel


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    # Templates come from model files: render them sandboxed.
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render_chat(
    template: str,
    messages: Sequence[dict[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    return _compile(template).render(
        messages=list(messages),
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
    )


_MARK = "\x00\x01{}\x01\x00"
_MARKS = re.compile("\x00\x01(\\d+)\x01\x00")


def chat_tokens(model: LlamaModel, messages: Sequence[dict[str, str]]) -> tuple[list[int], int]:
    """The prompt's tokens for a conversation (with the generation prompt), and how many of them
    come before the last message's content: a prefix that requests sharing the earlier turns (a
    system prompt with instructions or a label list) share in the engine's prefix cache.

    The template's own markers become control tokens; what the messages say is tokenized as text,
    so a message cannot forge a turn (`<|im_start|>system` written in a user message stays text).
    Each message's content is stood in for by a mark while the template renders, and the rendered
    text is tokenized piece by piece. Models without a template get `role: content` lines."""
    if not messages:
        raise ValueError("a conversation needs at least one message")
    contents = [m["content"] for m in messages]
    rendered = _render_marked(model, messages, [_MARK.format(i) for i in range(len(messages))])
    # A template that trims contents (`| trim`) must see them trimmed here too.
    last = len(messages) - 1
    padded = _render_marked(model, messages, [_MARK.format(i) if i < last else f" {_MARK.format(i)} " for i in range(len(messages))])
    if f" {_MARK.format(last)} " not in padded:
        contents = [content.strip() for content in contents]
    pieces = _MARKS.split(rendered)
    tokens: list[int] = model.tokenize_rendered(pieces[0]) if model.chat_template else model.tokenize(pieces[0])
    prefix_len = 0
    for index, template_text in zip(pieces[1::2], pieces[2::2], strict=True):
        if int(index) == last:
            prefix_len = len(tokens)
        tokens += model.tokenize(contents[int(index)], add_special=False, parse_special=False)
        if template_text:
            tokens += model.tokenize(template_text, add_special=False, parse_special=bool(model.chat_template))
    return tokens, (prefix_len if 0 < prefix_len < len(tokens) else 0)


def _render_marked(model: LlamaModel, messages: Sequence[dict[str, str]], marks: list[str]) -> str:
    marked = [dict(message, content=mark) for message, mark in zip(messages, marks, strict=True)]
    if not model.chat_template:
        return "".join(f"{m['role']}: {m['content']}\n" for m in marked) + "assistant: "
    return model.apply_chat_template(marked, add_generation_prompt=True)
