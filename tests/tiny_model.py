"""Write a tiny random-weight llama-architecture GGUF for fast engine tests.

The model is real as far as llama.cpp is concerned (SentencePiece-style vocabulary with byte
fallback, rotary attention with grouped KV heads, SwiGLU feed-forward), just small and random:
it loads in milliseconds and exercises the same code paths as the real models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_CTX_TRAIN = 4096

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_WORDS = (
    "the a an and of to in is it you that he was for on are with as I his they be at one have this "
    "from or had by hot word but what some we can out other were all there when up use your how said "
    "each she which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my over "
    "know water than call first who may down side been now find any new work part take get place made "
    "live where after back little only round man year came show every good me give our under name "
    "very through just form sentence great think say help low line differ turn cause much mean before "
    "move right boy old too same tell does set three want air well also play small end put home read "
    "hand port large spell add even land here must big high such follow act why ask men change went "
    "light kind off need house picture try us again animal point mother world near build self earth "
    "father head stand own page should country found answer school grow study still learn plant cover "
    "food sun four between state keep eye never last let thought city tree cross farm hard start might "
    "story saw far sea draw left late run while press close night real life few north open seem "
    "together next white children begin got walk example ease paper group always music those both mark "
    "often letter until mile river car feet care second book carry took science eat room friend began "
    "idea fish mountain stop once base hear horse cut sure watch color face wood main enough plain girl "
    "usual young ready above ever red list though feel talk bird soon body dog family direct pose leave "
    "song measure door product black short numeral class wind question happen complete ship area half "
    "rock order fire south problem piece told knew pass since top whole king space heard best hour "
    "better true during hundred five remember step early hold west ground interest reach fast verb sing "
    "listen six table travel less morning ten simple several vowel toward war lay against pattern slow "
    "center love person money serve appear road map rain rule govern pull cold notice voice unit power "
    "town fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest "
    "correct able pound done beauty drive stood contain front teach week final gave green oh quick "
    "develop ocean warm free minute strong special mind behind clear tail produce fact street inch "
    "multiply nothing course stay wheel full force blue object decide surface deep moon island foot "
    "system busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran "
    "check game shape equate miss brought heat snow tire bring yes distant fill east paint language "
    "among ticket refund card account password login error server user"
).split()


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types in SentencePiece convention."""
    tokens = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    types = [2, 3, 3, 3, 3, 3]  # unknown, control…
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256  # byte
    pieces = ["▁"] + [f"▁{w}" for w in dict.fromkeys(_WORDS)]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [chr(c) for c in range(ord("0"), ord("9") + 1)]
    tokens += pieces
    types += [1] * len(pieces)
    # Longer pieces get higher scores so the tokenizer prefers whole words.
    scores = [0.0] * (6 + 256) + [float(len(p)) for p in pieces]
    return tokens, scores, types


def tensor_shapes() -> dict[str, tuple[int, int]]:
    """(n_out, n_in) of every adaptable weight of the tiny model, by GGUF tensor name."""
    head_dim = N_EMBD // N_HEAD
    shapes = {}
    for layer in range(N_LAYER):
        shapes |= {
            f"blk.{layer}.attn_q.weight": (N_HEAD * head_dim, N_EMBD),
            f"blk.{layer}.attn_k.weight": (N_HEAD_KV * head_dim, N_EMBD),
            f"blk.{layer}.attn_v.weight": (N_HEAD_KV * head_dim, N_EMBD),
            f"blk.{layer}.attn_output.weight": (N_EMBD, N_HEAD * head_dim),
            f"blk.{layer}.ffn_gate.weight": (N_FF, N_EMBD),
            f"blk.{layer}.ffn_up.weight": (N_FF, N_EMBD),
            f"blk.{layer}.ffn_down.weight": (N_EMBD, N_FF),
        }
    return shapes


def random_lora(targets: Sequence[str] = ("attn_q", "attn_v"), *, rank: int = 4, seed: int = 1, size: float = 1.0,
                zero_b: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random (A (r, n_in), B (n_out, r)) for the tiny model's `targets` in every layer; B = 0 with `zero_b`."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, (n_out, n_in) in tensor_shapes().items():
        if name.split(".")[2] in targets:
            a = (rng.standard_normal((rank, n_in)) / np.sqrt(n_in)).astype(np.float32)
            b = size * rng.standard_normal((n_out, rank)) / np.sqrt(rank)
            b = np.zeros((n_out, rank), np.float32) if zero_b else b.astype(np.float32)
            weights[name] = (a, b)
    return weights


def write_tiny_gguf(path: Path, seed: int = 0, *, add: Mapping[str, np.ndarray] | None = None) -> Path:
    """The tiny model; `add` adds arrays to its weights by tensor name (a LoRA merged into them)."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("workhorse-tiny-test")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    def weight(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def tensor(name: str, values: np.ndarray) -> None:
        if add and name in add:
            values = (values + add[name]).astype(np.float32)
        writer.add_tensor(name, values)

    shapes = tensor_shapes()
    tensor("token_embd.weight", rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32))
    tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    tensor("output.weight", weight(n_vocab, N_EMBD) * 4)
    for layer in range(N_LAYER):
        prefix = f"blk.{layer}"
        tensor(f"{prefix}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"{prefix}.{part}.weight", weight(*shapes[f"{prefix}.{part}.weight"]))
        tensor(f"{prefix}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for part in ("ffn_gate", "ffn_up", "ffn_down"):
            tensor(f"{prefix}.{part}.weight", weight(*shapes[f"{prefix}.{part}.weight"]))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_adapter(path: Path, targets: Sequence[str] = ("attn_q", "attn_v"), *, rank: int = 4, alpha: float = 8.0,
                       seed: int = 1, size: float = 1.0, zero_b: bool = False, architecture: str = "llama",
                       dtype: type = np.float32) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A random LoRA adapter for the tiny model in llama.cpp's GGUF format; returns (path, {name: (A, B)})."""
    from workhorse.engine import write_adapter

    weights = random_lora(targets, rank=rank, seed=seed, size=size, zero_b=zero_b)
    return write_adapter(path, architecture, weights, alpha=alpha, dtype=dtype), weights


def merged_delta(weights: Mapping[str, tuple[np.ndarray, np.ndarray]], *, alpha: float, scale: float = 1.0,
                 dtype: type = np.float32) -> dict[str, np.ndarray]:
    """What the adapter adds to each weight: scale × alpha / r × B·A (A and B as stored, in `dtype`)."""
    delta = {}
    for name, (a, b) in weights.items():
        a, b = a.astype(dtype).astype(np.float64), b.astype(dtype).astype(np.float64)
        delta[name] = (scale * alpha / a.shape[0] * b @ a).astype(np.float32)
    return delta
