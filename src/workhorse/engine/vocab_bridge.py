"""The model's vocabulary as llguidance sees it, built once per loaded model.

llguidance computes token masks over a byte-level view of the vocabulary: the bytes of every
token, which tokens are special, and which end generation. Reading 262k tokens through ctypes
takes about a second, so the tokenizer is built on first use and kept for as long as the model
object lives (a weak-keyed cache: a closed and collected model takes its entry with it).
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import TYPE_CHECKING

from workhorse.engine.model import LlamaModel, _llama
from workhorse.errors import EngineError

if TYPE_CHECKING:
    import llguidance

_cache: weakref.WeakKeyDictionary[LlamaModel, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()
# llguidance's marker for a special token: its bytes are prefixed with 0xFF, a byte that never
# occurs in UTF-8 text, so grammar text can never produce it by accident.
SPECIAL_PREFIX = b"\xff"


def token_table(model: LlamaModel) -> list[bytes]:
    """The bytes of every token, special tokens marked the way llguidance expects."""
    llama_cpp = _llama()
    vocab = llama_cpp.llama_model_get_vocab(model.ptr)
    control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    user_defined = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    tokens: list[bytes] = []
    for token in range(model.n_vocab):
        piece = model.token_bytes(token, special=True)
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        # Control tokens, and user-defined ones that look like them (<|im_end|>, <start_of_turn>),
        # must never be produced as text inside a JSON string.
        if attr & control or (attr & user_defined and piece.startswith(b"<") and piece.endswith(b">")):
            piece = SPECIAL_PREFIX + piece
        tokens.append(piece)
    return tokens


def end_tokens(model: LlamaModel) -> list[int]:
    """The tokens that end generation, EOS first (llguidance allows them once the grammar is complete)."""
    ends = sorted(model.eog_tokens - {model.eos})
    return ([model.eos] if model.eos >= 0 else []) + ends


def llg_tokenizer(model: LlamaModel) -> llguidance.LLTokenizer:
    """The llguidance tokenizer of `model`, built on first use and cached on the model's lifetime."""
    with _cache_lock:
        cached = _cache.get(model)
        if cached is not None:
            return cached
        tokenizer = _build(model)
        _cache[model] = tokenizer
        return tokenizer


def _build(model: LlamaModel) -> llguidance.LLTokenizer:
    import llguidance

    llama_cpp = _llama()
    eos = end_tokens(model)
    if not eos:
        raise EngineError(
            f"{model.name} declares no end-of-generation token",
            "constrained decoding needs one to finish; use a model whose GGUF has tokenizer.ggml.eos_token_id",
        )
    # llguidance tokenizes forced text (fast-forward tokens) with llama.cpp's own tokenizer, so
    # they match what the model was trained on; the pointer stays valid while the model is loaded.
    tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    return llguidance.LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=token_table(model),
        vocab_ptr=llama_cpp.llama_model_get_vocab(model.ptr),
        tokenize_fptr=tokenize,
        eos_token=eos,
        slices=None,
    )


def output_tokens(model: LlamaModel, text: str) -> list[int]:
    """`text` as constrained generation spells it: llama.cpp's tokens of exactly these bytes, as
    llguidance forces them. Not `model.tokenize(text)`: a SentencePiece vocabulary puts a space
    before a text's start there, which no grammar lets the model write."""
    return list(llg_tokenizer(model).tokenize_str(text))
