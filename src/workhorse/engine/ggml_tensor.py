"""The part of ggml's tensor struct the engine reads in its graph callback.

llama-cpp-python passes `struct ggml_tensor *` to the scheduler's eval callback as a void
pointer. We read the name, shape and data of the final-norm tensor (the hidden states) and set
or clear the COMPUTE flag of the vocabulary projection that follows it. The layout below is
ggml's `struct ggml_tensor` of the pinned llama-cpp-python release (GGML_MAX_DIMS 4,
GGML_MAX_OP_PARAMS 64, GGML_MAX_SRC 10, GGML_MAX_NAME 64); `tests/test_engine_*` would fail
loudly (no hidden states captured) if it drifted.
"""

from __future__ import annotations

import ctypes

GGML_TENSOR_FLAG_COMPUTE = 16
GGML_TYPE_F32 = 0
# A flag bit ggml does not use, marking nodes whose COMPUTE flag the engine cleared; a rebuilt
# graph starts with fresh flags, so a stale mark can never switch on a node ggml left off.
SKIPPED_BY_WORKHORSE = 1 << 24


class GgmlTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


assert ctypes.sizeof(GgmlTensor) == 336, "ggml_tensor layout changed; update GgmlTensor"
