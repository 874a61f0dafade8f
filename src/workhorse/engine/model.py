"""A loaded GGUF model: weights (memory-mapped), vocabulary, metadata and chat template.

The model is immutable once loaded and may be shared by several contexts; tokenization is
thread-safe in llama.cpp, so any thread may call `tokenize`/`detokenize`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

from workhorse.engine.adapter import Adapter
from workhorse.errors import EngineError, ModelLoadError

logger = logging.getLogger(__name__)
_backend_lock = threading.Lock()
_backend_ready = False
_captured = threading.local()  # llama.cpp's error lines, while a call on this thread wants them


# llama.cpp's CPU backend synchronises its threads with OpenMP barriers at every graph node.
# libgomp spins up to 300,000 iterations before sleeping, which is fine on an idle machine but,
# when another process holds a core, turns a 0.9 s generation into 15 s (measured here on
# gemma3-270m, 2 threads, with 2 busy processes beside it). A spin of 5,000 keeps the idle speed
# (903 ms vs 893 ms) and stays fast under load (1.7 s). libgomp reads this when it loads, so it
# is set before llama_cpp is imported; a value the user set wins.
OPENMP_SPIN_DEFAULTS = {"GOMP_SPINCOUNT": "5000"}


def _llama():
    """Import llama_cpp lazily (it loads a shared library) and initialise the backend once."""
    global _backend_ready
    for key, value in OPENMP_SPIN_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import llama_cpp

    with _backend_lock:
        if not _backend_ready:
            _silence_llama_logs(llama_cpp)
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


_log_callback = None


def _silence_llama_logs(llama_cpp) -> None:
    """llama.cpp logs every load and KV operation to stderr; keep only errors."""
    global _log_callback
    GGML_LOG_LEVEL_ERROR = 4

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == GGML_LOG_LEVEL_ERROR:
            lines = getattr(_captured, "lines", None)
            if lines is not None:
                lines.append(text.decode("utf-8", errors="replace").strip())
                return
            import sys

            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _log_callback = callback  # keep a reference: llama.cpp holds the raw pointer
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def _llama_errors() -> Iterator[list[str]]:
    """The error lines llama.cpp logs on this thread meanwhile (its only account of why a call
    failed), kept for an exception instead of being printed."""
    _captured.lines = lines = []
    try:
        yield lines
    finally:
        _captured.lines = None


def _extra_buffer_types_safe(llama_cpp) -> bool:
    """False when llama.cpp was built with AMX matmul (a `-march=native` build on a CPU with AMX).

    ggml's AMX kernels crash on quantized models where the hypervisor does not grant AMX tile
    state. Extra buffer types are how ggml selects them, so we switch those off for such builds
    (losing weight repacking, ~10-30 % prompt speed). `scripts/llama-cmake-args` builds without
    AMX and keeps repacking.
    """
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    if "AMX_INT8 = 1" in info:
        logger.warning(
            "llama.cpp was built with AMX; disabling extra buffer types to avoid its crash. "
            'Rebuild with: CMAKE_ARGS="$(scripts/llama-cmake-args)" pip install --force-reinstall --no-cache-dir '
            "llama-cpp-python==0.3.36"
        )
        return False
    return True


class LlamaModel:
    """Weights and vocabulary of one GGUF file, and the LoRA adapters loaded onto it."""

    def __init__(self, path: str | Path, *, use_mmap: bool = True, name: str | None = None) -> None:
        llama_cpp = _llama()
        self.path = Path(path)
        self.name = name or self.path.stem
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}", "check the path or run `workhorse models list`")
        params = llama_cpp.llama_model_default_params()
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        params.n_gpu_layers = 0
        params.use_extra_bufts = _extra_buffer_types_safe(llama_cpp)
        self._ptr = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._ptr:
            raise ModelLoadError(
                f"llama.cpp could not load {self.path}",
                "the file may be truncated or of an unsupported architecture; re-pull it with `workhorse models pull`",
            )
        self._vocab = llama_cpp.llama_model_get_vocab(self._ptr)
        self._llama_cpp = llama_cpp
        self.n_vocab: int = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_embd: int = llama_cpp.llama_model_n_embd(self._ptr)
        self.n_layer: int = llama_cpp.llama_model_n_layer(self._ptr)
        self.n_head: int = llama_cpp.llama_model_n_head(self._ptr)
        self.n_head_kv: int = llama_cpp.llama_model_n_head_kv(self._ptr)
        self.n_ctx_train: int = llama_cpp.llama_model_n_ctx_train(self._ptr)
        self.n_params: int = llama_cpp.llama_model_n_params(self._ptr)
        self.size_bytes: int = llama_cpp.llama_model_size(self._ptr)
        self.file_bytes: int = self.path.stat().st_size
        self.bos: int = llama_cpp.llama_vocab_bos(self._vocab)
        self.eos: int = llama_cpp.llama_vocab_eos(self._vocab)
        self.add_bos: bool = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.add_sep: bool = bool(llama_cpp.llama_vocab_get_add_sep(self._vocab))
        # llama.cpp keeps the adapters loaded onto a model in a set on the model, which a context
        # reads when it sizes its compute graph (at creation and after its adapters change) and
        # an adapter's loading writes: contexts on several threads take this lock for both.
        self.setup_lock = threading.RLock()
        self._adapters: dict[str, ctypes.c_void_p] = {}  # sha256 → llama_adapter_lora *, freed with the model

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_ptr", None):
            self._llama_cpp.llama_model_free(self._ptr)  # and the adapters loaded onto it
            self._ptr = None
            self._adapters.clear()

    def __del__(self) -> None:  # models are long-lived; this only matters in tests
        try:
            self.close()
        except Exception:
            pass

    @property
    def ptr(self):
        return self._ptr

    # -- adapters -------------------------------------------------------------------------
    def adapter_handle(self, adapter: Adapter):
        """The `llama_adapter_lora *` of `adapter`, loaded onto these weights the first time (once
        per file content; llama.cpp frees it with the model)."""
        with self.setup_lock:
            handle = self._adapters.get(adapter.sha256)
            if handle is None:
                handle = self._adapters[adapter.sha256] = self._load_adapter(adapter)
        return handle

    def _load_adapter(self, adapter: Adapter):
        with _llama_errors() as errors:
            handle = self._llama_cpp.llama_adapter_lora_init(self._ptr, str(adapter.path).encode())
        if handle:
            return handle
        reasons = (line.split(": ", 1)[-1].removeprefix("failed to apply lora adapter: ") for line in errors)
        reason = "; ".join(reasons) or "no reason given"
        if "arch mismatch" in reason or "incorrect shape" in reason or "does not exist in base model" in reason:
            hint = (f"the adapter was made for another base model: use one trained on {self.name} "
                    f"({self.architecture}, {self.n_layer} layers, {self.n_embd} wide)")
        else:
            hint = "the file is not a LoRA adapter in llama.cpp's GGUF format (see workhorse.engine.adapter)"
        raise EngineError(f"llama.cpp could not load the LoRA adapter {adapter.path} onto {self.name}: {reason}", hint)

    # -- metadata -------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._llama_cpp.llama_model_meta_val_str(self._ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):  # chat templates can be long
            buf = ctypes.create_string_buffer(n + 1)
            self._llama_cpp.llama_model_meta_val_str(self._ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    @cached_property
    def architecture(self) -> str:
        return self.meta("general.architecture") or "unknown"

    @cached_property
    def is_encoder(self) -> bool:
        """Whether attention runs both ways (BERT): llama.cpp then keeps no KV cache for the model
        and evaluates each sequence whole (see `encoder.py`)."""
        return self.meta(f"{self.architecture}.attention.causal") == "false"

    @cached_property
    def max_tokens(self) -> int | None:
        """The length a sentence-transformers model truncates its input to, special tokens included
        (`sentence_transformers.max_seq_length`, written by `models.convert_bert`); None: no limit
        of its own."""
        value = self.meta("sentence_transformers.max_seq_length")
        return int(value) if value else None

    @cached_property
    def chat_template(self) -> str | None:
        return self.meta("tokenizer.chat_template")

    # -- vocabulary -----------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Text to token ids. `add_special` adds BOS where the model wants it (and, for BERT, the
        closing [SEP]); `parse_special` turns control-token text (e.g. `<start_of_turn>`) into the
        control token. A model with `max_tokens` truncates as sentence-transformers does: the
        word pieces past the limit go, the closing special token stays."""
        tokens = self._tokenize(text, add_special, parse_special)
        limit = self.max_tokens
        if add_special and limit is not None and len(tokens) > limit:
            tokens = tokens[: limit - 1] + tokens[-1:] if self.add_sep else tokens[:limit]
        return tokens

    def _tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as error:  # half a UTF-16 pair, e.g. from a JSON "\ud800"
            raise EngineError(f"text is not valid Unicode at character {error.start}", "send well-formed text") from None
        capacity = len(data) + 8
        buf = (self._llama_cpp.llama_token * capacity)()
        n = self._llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:  # buffer too small: -n is the required size
            capacity = -n
            buf = (self._llama_cpp.llama_token * capacity)()
            n = self._llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def tokenize_rendered(self, text: str) -> list[int]:
        """Tokens of text rendered from a chat template: its control tokens are parsed, and BOS
        is added only when the template did not write it already (no doubled BOS)."""
        bos_text = self.detokenize([self.bos], special=True) if self.bos >= 0 else ""
        return self.tokenize(text, add_special=not (bos_text and text.startswith(bos_text)), parse_special=True)

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        """Token ids to text; pieces are joined as bytes so multi-byte characters split across
        tokens decode correctly."""
        return b"".join(self.token_bytes(t, special=special) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self._vocab, token))

    @cached_property
    def eog_tokens(self) -> frozenset[int]:
        return frozenset(t for t in range(self.n_vocab) if self.is_eog(t))

    # -- chat -----------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """Render messages with the model's own Jinja chat template from the GGUF metadata."""
        from workhorse.engine.chat_template import render_chat

        if not self.chat_template:
            raise ModelLoadError(
                f"{self.name} has no chat template in its GGUF metadata",
                "use a plain prompt, or an instruction-tuned model such as qwen2.5-coder-0.5b",
            )
        return render_chat(
            self.chat_template,
            messages,
            bos_token=self.detokenize([self.bos], special=True) if self.bos >= 0 else "",
            eos_token=self.detokenize([self.eos], special=True) if self.eos >= 0 else "",
            add_generation_prompt=add_generation_prompt,
        )
