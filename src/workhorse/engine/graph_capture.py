"""Reading hidden states out of llama.cpp's compute graph, and skipping the vocabulary projection.

llama.cpp's scheduler calls an eval callback twice per graph node: `ask=True` (do you want this
tensor?) before computing, and `ask=False` once a wanted tensor is computed. We want the
final-norm tensor (`result_norm`: the hidden state of every output token, in batch order) and,
on request, per-layer outputs (`l_out-N`: every token of the batch). For decodes that asked for
no logits, every node after the final norm (the output projection: a row of 262k logits costs
more than the rest of a 270M model) gets its COMPUTE flag cleared, so the CPU backend skips it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np

from workhorse.engine.ggml_tensor import GGML_TENSOR_FLAG_COMPUTE, GGML_TYPE_F32, SKIPPED_BY_WORKHORSE, GgmlTensor
from workhorse.errors import EngineError

HIDDEN_TENSOR_NAME = b"result_norm"


def _float_rows(tensor: GgmlTensor) -> np.ndarray:
    """Copy a 2-D float32 tensor (one row per token) out of the compute buffer."""
    if tensor.type != GGML_TYPE_F32:
        raise EngineError(f"tensor {tensor.name.decode()} is not float32")
    n_embd, n_rows = int(tensor.ne[0]), int(tensor.ne[1])
    row_stride = int(tensor.nb[1]) // 4
    flat = np.ctypeslib.as_array(ctypes.cast(tensor.data, ctypes.POINTER(ctypes.c_float)), shape=(n_rows * row_stride,))
    return flat.reshape(n_rows, row_stride)[:, :n_embd].copy()


class GraphCapture:
    """The eval-callback state of one context, armed before each decode and read after it."""

    def __init__(self, llama_cpp) -> None:
        self._want_hidden = False
        self._skip_vocab = False
        self._after_hidden = False
        self._hidden_rows: list[np.ndarray] = []
        self._layer_names: dict[bytes, int] = {}
        self._layer_rows: dict[int, np.ndarray] = {}
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)

    def arm(self, *, hidden: bool, logits: bool, layers: Sequence[int]) -> None:
        self._want_hidden = hidden
        self._skip_vocab = not logits
        self._after_hidden = False
        self._hidden_rows = []
        self._layer_names = {f"l_out-{layer}".encode(): layer for layer in layers}
        self._layer_rows = {}

    def collect(self, n_outputs: int, n_tokens: int, architecture: str, n_layer: int) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
        """The hidden rows (one per output) and layer rows (one per token) of the finished decode."""
        hidden = None
        if self._want_hidden:
            if not self._hidden_rows:
                raise EngineError(
                    f"{architecture} graph has no '{HIDDEN_TENSOR_NAME.decode()}' tensor",
                    "hidden states are not available for this architecture",
                )
            hidden = np.concatenate(self._hidden_rows)
            if hidden.shape[0] != n_outputs:
                raise EngineError(f"expected {n_outputs} hidden rows, got {hidden.shape[0]}")
        layers, wanted = self._layer_rows, set(self._layer_names.values())
        self.arm(hidden=False, logits=True, layers=())
        if set(layers) != wanted or any(rows.shape[0] != n_tokens for rows in layers.values()):
            raise EngineError(
                f"layers {sorted(wanted)} not all found in the graph (it has {n_layer} layers; the last one "
                "only has output rows, use the hidden state for it)"
            )
        return hidden, layers

    def _on_node(self, tensor_ptr: int, ask: bool, _user_data) -> bool:
        tensor = GgmlTensor.from_address(tensor_ptr)
        name = tensor.name
        if ask:
            if self._after_hidden:
                flags = tensor.flags
                if self._skip_vocab:
                    if flags & GGML_TENSOR_FLAG_COMPUTE:
                        tensor.flags = (flags & ~GGML_TENSOR_FLAG_COMPUTE) | SKIPPED_BY_WORKHORSE
                elif flags & SKIPPED_BY_WORKHORSE:
                    # Only nodes we switched off are switched back on: some are meant to stay off.
                    tensor.flags = (flags | GGML_TENSOR_FLAG_COMPUTE) & ~SKIPPED_BY_WORKHORSE
                return False
            if name == HIDDEN_TENSOR_NAME:
                self._after_hidden = True
                return self._want_hidden
            return name in self._layer_names
        if self._want_hidden and name == HIDDEN_TENSOR_NAME:
            self._hidden_rows.append(_float_rows(tensor))
        elif name in self._layer_names:
            self._layer_rows[self._layer_names[name]] = _float_rows(tensor)
        return True
