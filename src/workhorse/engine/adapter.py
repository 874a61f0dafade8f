"""LoRA adapters in llama.cpp's GGUF format: what a file must hold, and how one is named.

An adapter file holds, for each adapted weight `W` of the base model (numpy shape (n_out, n_in),
e.g. `blk.3.attn_q.weight`), two tensors `<name>.lora_a` (numpy (r, n_in)) and `<name>.lora_b`
(numpy (n_out, r)), in float32 or float16, and the metadata `general.type=adapter`,
`general.architecture=<the base model's>`, `adapter.type=lora` and `adapter.lora.alpha`.
llama.cpp adds `scale × alpha / r × B·A·x` to `W·x` at run time; the weights stay as they are.

Tensors are in the base GGUF's own layout: where the conversion of the base model rearranged a
weight's rows (llama.cpp permutes the rows of `attn_q`/`attn_k` of the llama architecture for its
rotary embedding), `lora_b`'s rows must be rearranged the same way (llama.cpp's
`convert_lora_to_gguf.py` does this through the same conversion code).

An `Adapter` is named by its content: two task versions that carry the same file (a revision
copies it) share one loaded adapter and one engine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from workhorse.errors import EngineError


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter file and the scale it is applied with; equal when content and scale are."""

    path: Path = field(compare=False)
    sha256: str
    scale: float = 1.0

    @classmethod
    def from_file(cls, path: str | Path, scale: float = 1.0) -> Adapter:
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"LoRA adapter file not found: {path}",
                              "check the path; an adapter is a .gguf file in llama.cpp's LoRA format")
        stat = path.stat()
        return cls(path, _file_sha256(path.resolve(), stat.st_mtime_ns, stat.st_size), float(scale))

    @property
    def short_name(self) -> str:
        return f"lora-{self.sha256[:12]}"


@lru_cache(maxsize=256)
def _file_sha256(path: Path, mtime_ns: int, size: int) -> str:  # the stat makes a rewritten file hash again
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_adapter(path: str | Path, architecture: str, weights: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                  alpha: float, dtype: type = np.float32) -> Path:
    """Write a LoRA adapter for a base model of `architecture`: `weights` maps a base tensor name
    (`blk.0.attn_q.weight`) to its (A (r, n_in), B (n_out, r)). Needs the `gguf` package."""
    import gguf

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name, (a, b) in weights.items():
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"{name}: need A (r, n_in) and B (n_out, r), got {a.shape} and {b.shape}")
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=dtype))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
