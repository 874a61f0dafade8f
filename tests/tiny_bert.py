"""A tiny random-weight BERT GGUF, written by the same code that converts the real encoder
(`workhorse.models.convert_bert`): llama.cpp loads it in milliseconds and runs the encoder path
(whole sequences, no KV cache, several sequences to a decode) as it runs all-MiniLM-L6-v2."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workhorse.models.convert_bert import BertCheckpoint, write_gguf

N_EMBD = 32
N_LAYER = 2
N_HEAD = 4
N_FF = 64
N_POSITIONS = 64
MAX_SEQ_LENGTH = 24  # the truncation length written into the file (sentence-transformers' max_seq_length)

_WORDS = ("the a an and of to in is it card refund order password login error reset my was charged twice "
          "please where how do i can you not arrived yet account new send ship cancel help").split()
_SUFFIXES = ("##s", "##ed", "##ing", "##er", "##ly")
_PUNCTUATION = list(".,!?'\"-:;()#$%&@/")


def vocabulary() -> list[str]:
    """BERT's layout: [PAD] at 0, [UNK] [CLS] [SEP] [MASK] at 100-103, the pieces after."""
    unused = [f"[unused{i}]" for i in range(99)]
    return ["[PAD]", *unused, "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_PUNCTUATION, *map(str, range(10)),
            *_WORDS, *_SUFFIXES]


def _checkpoint(seed: int) -> BertCheckpoint:
    rng = np.random.default_rng(seed)
    vocab = vocabulary()

    def weights(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors = {
        "embeddings.word_embeddings.weight": weights(len(vocab), N_EMBD),
        "embeddings.position_embeddings.weight": weights(N_POSITIONS, N_EMBD),
        "embeddings.token_type_embeddings.weight": weights(2, N_EMBD),
        "embeddings.LayerNorm.weight": np.ones(N_EMBD, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(N_EMBD, np.float32),
    }

    def dense(name: str, n_out: int, n_in: int) -> None:
        tensors[f"{name}.weight"] = weights(n_out, n_in)
        tensors[f"{name}.bias"] = weights(n_out, scale=0.02)

    def layer_norm(name: str) -> None:
        tensors[f"{name}.weight"] = np.ones(N_EMBD, np.float32)
        tensors[f"{name}.bias"] = np.zeros(N_EMBD, np.float32)

    for layer in range(N_LAYER):
        prefix = f"encoder.layer.{layer}"
        for part in ("query", "key", "value"):
            dense(f"{prefix}.attention.self.{part}", N_EMBD, N_EMBD)
        dense(f"{prefix}.attention.output.dense", N_EMBD, N_EMBD)
        layer_norm(f"{prefix}.attention.output.LayerNorm")
        dense(f"{prefix}.intermediate.dense", N_FF, N_EMBD)
        dense(f"{prefix}.output.dense", N_EMBD, N_FF)
        layer_norm(f"{prefix}.output.LayerNorm")
    config = {
        "model_type": "bert", "vocab_size": len(vocab), "hidden_size": N_EMBD, "num_hidden_layers": N_LAYER,
        "num_attention_heads": N_HEAD, "intermediate_size": N_FF, "max_position_embeddings": N_POSITIONS,
        "layer_norm_eps": 1e-12, "type_vocab_size": 2,
    }
    special = {role: vocab.index(f"[{role.upper()}]") for role in ("cls", "sep", "pad", "unk", "mask")}
    return BertCheckpoint("tiny-bert", config, tensors, vocab, special, lowercase=True,
                          max_seq_length=MAX_SEQ_LENGTH, pooling="mean")


def write_tiny_bert(path: Path, *, seed: int = 0) -> Path:
    write_gguf(_checkpoint(seed), path, f16=False)
    return path
