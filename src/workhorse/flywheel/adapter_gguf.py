"""A trained LoRA adapter written in llama.cpp's GGUF LoRA format, so the engine applies it.

The format (llama.cpp's convert_lora_to_gguf.py): for each adapted weight `W` of the base model,
tensors `<W's GGUF name>.lora_a` (rank × n_in) and `.lora_b` (n_out × rank); metadata
`general.type=adapter`, `adapter.type=lora`, `adapter.lora.alpha`. llama.cpp adds
scale × alpha / rank × B·A to W, as peft does with scale 1.

transformers loads a llama GGUF with the query and key rows un-permuted (llama.cpp stores them
interleaved for its rotary embedding), so their B matrices are permuted back here; Gemma 3 and
Qwen 2 store them as transformers does.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from workhorse.errors import TaskError

ADAPTER_FILE = "adapter.gguf"
# Architectures whose name mapping and row order are checked against llama.cpp (tests/test_lora_export.py).
SUPPORTED = frozenset({"llama", "gemma3", "qwen2"})
PERMUTED_ROWS = frozenset({"llama"})
_PEFT_NAME = re.compile(r"(layers\.\d+\.\w+\.\w+)\.lora_([AB])\.weight$")


def export_adapter(lora_state: dict[str, np.ndarray], *, architecture: str, n_layers: int, n_head: int,
                   n_head_kv: int, alpha: float, path: Path) -> Path:
    """Write LoRA tensors (`lora_state`'s names → arrays) to `path`."""
    import gguf

    if architecture not in SUPPORTED:
        raise TaskError(f"exporting LoRA adapters for {architecture!r} models is not supported",
                        f"use a model of one of these architectures: {', '.join(sorted(SUPPORTED))}")
    arch_enum = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}[architecture]
    names = gguf.TensorNameMap(arch_enum, n_layers)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in lora_state.items():
        match = _PEFT_NAME.match(key)
        if not match:
            raise TaskError(f"unexpected adapter tensor {key!r}", "adapters come from workhorse train --method lora")
        module, side = match.groups()
        pairs.setdefault(module, {})[side] = np.asarray(value, dtype=np.float32)

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(temporary), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for module in sorted(pairs, key=_layer_order):
        a, b = pairs[module]["A"], pairs[module]["B"]
        base = names.get_name(f"model.{module}.weight", try_suffixes=(".weight",))
        if base is None:
            raise TaskError(f"no llama.cpp tensor for {module} in a {architecture} model", "adapt only the linear layers of the blocks")
        if architecture in PERMUTED_ROWS and module.endswith(("q_proj", "k_proj")):
            b = _permute_rows(b, n_head if module.endswith("q_proj") else n_head_kv)
        writer.add_tensor(f"{base}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{base}.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    temporary.replace(path)
    return path


def lora_state(model: object) -> dict[str, np.ndarray]:
    """peft's LoRA tensors of `model` as float32 arrays, named from the blocks down
    (`layers.N.self_attn.q_proj.lora_A.weight`) whatever wraps them."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    return {"layers." + key.split("layers.", 1)[1]: value.detach().float().cpu().numpy() for key, value in state.items()}


def _permute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's interleaved row order for one rotary projection (convert_hf_to_gguf's permute)."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _layer_order(module: str) -> tuple[int, str]:
    return int(module.split(".")[1]), module



def read_adapter(path: Path, *, architecture: str, n_head: int, n_head_kv: int) -> dict[str, np.ndarray]:
    """An exported adapter back as peft's tensors (`layers.N.self_attn.q_proj.lora_A.weight` → array):
    to check what llama.cpp applies, or to continue training from a version's adapter."""
    import gguf

    to_module = {}
    reader = gguf.GGUFReader(str(path))
    n_layers = 1 + max(int(t.name.split(".")[1]) for t in reader.tensors)
    arch_enum = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}[architecture]
    names = gguf.TensorNameMap(arch_enum, n_layers)
    for layer in range(n_layers):
        for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            base = names.get_name(f"model.layers.{layer}.{module}.weight", try_suffixes=(".weight",))
            if base:
                to_module[base] = f"layers.{layer}.{module}"
    state = {}
    for tensor in reader.tensors:
        base, side = tensor.name.rsplit(".", 1)
        module = to_module[base]
        # GGUF lists dimensions fastest first: the array's shape is the reverse.
        array = np.array(tensor.data, dtype=np.float32).reshape([int(d) for d in reversed(tensor.shape)])
        if side == "lora_b" and architecture in PERMUTED_ROWS and module.endswith(("q_proj", "k_proj")):
            array = _unpermute_rows(array, n_head if module.endswith("q_proj") else n_head_kv)
        state[f"{module}.lora_{'A' if side == 'lora_a' else 'B'}.weight"] = array
    return state


def _unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    return rows.reshape(n_head, rows.shape[0] // n_head // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)
