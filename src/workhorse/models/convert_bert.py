"""A sentence-transformers BERT checkpoint (safetensors + WordPiece tokenizer, zipped) written as
the GGUF that llama.cpp's `bert` architecture loads.

The file follows what llama.cpp's own converter (`convert_hf_to_gguf.py`, BertModel) writes, so
llama.cpp runs it as it would any converted BERT: tensors named by `gguf.TensorNameMap`, the
vocabulary in llama.cpp's "phantom space" form (a word-initial piece carries a leading "▁", a
`##` continuation loses its `##`), and the pooling the checkpoint's sentence-transformers pipeline
declares. Two keys go beyond that converter: the tokenizer's lower-casing (llama.cpp reads it,
and lower-cases nothing without it) and `sentence_transformers.max_seq_length`, the length the
pipeline truncates to (see `LlamaModel.max_tokens`).

Weights are written in F16 where llama.cpp's converter would (2-D `.weight` matrices except the
position and token-type tables), F32 elsewhere: measured on all-MiniLM-L6-v2, F16 keeps a cosine
of 0.9999+ to the F32 vectors at half the file (see docs/embeddings.md).

Deterministic: the same checkpoint gives the same bytes (tensors and keys in a fixed order, no
timestamps), which is what lets the registry pin the SHA-256 of the product as well as of the
source. The bytes depend on the `gguf` package's writer, hence its pinned version.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workhorse.errors import ModelError, ModelPackageMissingError

ARCH = "bert"
MAX_SEQ_LENGTH_KEY = "sentence_transformers.max_seq_length"
# llama.cpp's keys for BertNormalizer options; the pinned gguf package has no writer method for them.
LOWERCASE_KEY = "tokenizer.ggml.normalizer.lowercase"
CLS_ID_KEY = "tokenizer.ggml.cls_token_id"
# What llama.cpp's converter names this tokenizer (a hash of how it splits a test text matches
# BAAI/bge-small-en-v1.5, the same uncased WordPiece vocabulary); llama.cpp ignores it for WordPiece.
TOKENIZER_PRE = "bert-bge"
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
# Tensors llama.cpp's BERT does not use: the pretraining pooler and the position-id buffer.
_UNUSED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


@dataclass(frozen=True)
class BertCheckpoint:
    """What the GGUF is written from, read out of the checkpoint's files."""

    name: str
    config: dict[str, Any]  # the transformers config.json
    tensors: dict[str, np.ndarray]  # transformers names → arrays, in the file's order
    vocab: list[str]  # WordPiece tokens by id
    special: dict[str, int]  # "cls" | "sep" | "pad" | "unk" | "mask" → id
    lowercase: bool
    max_seq_length: int
    pooling: str  # "mean" | "cls"


def _invalid(source: Path, why: str) -> ModelError:
    return ModelError(f"{source} is not a sentence-transformers BERT checkpoint: {why}",
                      "re-install the package that ships it; its bytes are pinned, so this means a damaged install")


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file (an 8-byte header length, a JSON header, raw little-endian data)."""
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = memoryview(data)[8 + header_len :]
    tensors = {}
    # Sorted by offset: the file's own order, so the GGUF's tensor order never depends on JSON key order.
    entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])
    for name, entry in entries:
        start, end = entry["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        tensors[name] = np.frombuffer(body[start:end], dtype=np.dtype(dtype).newbyteorder("<")).reshape(entry["shape"])
    return tensors


def read_checkpoint(source: Path, name: str) -> BertCheckpoint:
    """The checkpoint in the zip `source` (the layout sentence-transformers saves: config.json,
    model.safetensors, tokenizer.json, modules.json, the pooling module's config.json)."""
    try:
        with zipfile.ZipFile(source) as archive:
            def load(member: str) -> Any:
                return json.loads(archive.read(member))

            config = load("config.json")
            tokenizer = load("tokenizer.json")
            modules = load("modules.json")
            pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
            pooling_config = load(f"{pooling_dir}/config.json")
            max_seq_length = int(load("sentence_bert_config.json")["max_seq_length"])
            tensors = read_safetensors(archive.read("model.safetensors"))
    except (OSError, KeyError, StopIteration, ValueError, zipfile.BadZipFile) as error:
        raise _invalid(source, f"{type(error).__name__}: {error}") from error
    if config.get("model_type") != "bert" or tokenizer["model"]["type"] != "WordPiece":
        raise _invalid(source, f"model_type {config.get('model_type')!r}, tokenizer {tokenizer['model']['type']!r}")
    pieces = tokenizer["model"]["vocab"]
    vocab = [""] * config["vocab_size"]
    for piece, token_id in pieces.items():
        vocab[token_id] = piece
    if not all(vocab):
        raise _invalid(source, "the vocabulary has gaps")
    special = {role: pieces[f"[{role.upper()}]"] for role in ("cls", "sep", "pad", "unk", "mask")}
    if pooling_config.get("pooling_mode_mean_tokens"):
        pooling = "mean"
    elif pooling_config.get("pooling_mode_cls_token"):
        pooling = "cls"
    else:
        raise _invalid(source, f"unsupported pooling {pooling_config}")
    lowercase = bool((tokenizer.get("normalizer") or {}).get("lowercase", False))
    return BertCheckpoint(name, config, tensors, vocab, special, lowercase, max_seq_length, pooling)


def _phantom(piece: str, control: bool) -> str:
    """llama.cpp's WordPiece form of a vocabulary entry (its tokenizer prepends "▁" to each word)."""
    if control:
        return piece
    return piece[2:] if piece.startswith("##") else "\u2581" + piece


def write_gguf(checkpoint: BertCheckpoint, out: Path, *, f16: bool = True) -> None:
    """Write `checkpoint` to `out` as a `bert` GGUF (F16 matrices when `f16`, else all F32)."""
    try:
        import gguf
    except ImportError:
        raise ModelPackageMissingError("converting a checkpoint to GGUF needs the gguf package",
                                       "pip install 'gguf==0.19.0'") from None

    config = checkpoint.config
    writer = gguf.GGUFWriter(str(out), ARCH)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(checkpoint.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN if checkpoint.pooling == "mean" else gguf.PoolingType.CLS)
    writer.add_uint32(MAX_SEQ_LENGTH_KEY, checkpoint.max_seq_length)

    control = set(checkpoint.special.values())
    writer.add_token_type_count(config.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre(TOKENIZER_PRE)
    writer.add_token_list([_phantom(piece, i in control) for i, piece in enumerate(checkpoint.vocab)])
    writer.add_token_types([gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL
                            for i in range(len(checkpoint.vocab))])
    special = checkpoint.special
    writer.add_bos_token_id(special["cls"])  # llama.cpp's WordPiece tokenizer opens with its BOS
    writer.add_uint32(CLS_ID_KEY, special["cls"])
    writer.add_sep_token_id(special["sep"])
    writer.add_pad_token_id(special["pad"])
    writer.add_unk_token_id(special["unk"])
    writer.add_mask_token_id(special["mask"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    writer.add_add_eos_token(False)
    writer.add_bool(LOWERCASE_KEY, checkpoint.lowercase)

    names = gguf.TensorNameMap(gguf.MODEL_ARCH.BERT, config["num_hidden_layers"])
    kept_f32 = {gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD], gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_TYPES]}
    for hf_name, array in checkpoint.tensors.items():
        hf_name = hf_name.removeprefix("bert.")
        if hf_name in _UNUSED:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelError(f"no llama.cpp name for BERT tensor {hf_name!r}", "this checkpoint is not a plain BertModel")
        as_f16 = f16 and array.ndim == 2 and name.endswith(".weight") and name.removesuffix(".weight") not in kept_f32
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float16 if as_f16 else np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def convert(source: Path, out: Path, *, name: str, f16: bool = True) -> None:
    """The sentence-transformers BERT zip `source` as a GGUF at `out`."""
    write_gguf(read_checkpoint(source, name), out, f16=f16)
