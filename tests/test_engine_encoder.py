"""The engine on an encoder (BERT), on a tiny random-weight one: whole sequences, no KV cache,
sequences of different lengths side by side in one decode, and clear refusals for what an
encoder cannot do. The real encoder's quality is in test_encoder_minilm.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_bert import MAX_SEQ_LENGTH, N_EMBD, vocabulary, write_tiny_bert

from workhorse.engine import Adapter, Engine, EngineConfig, EngineWorker, EvalRequest, GenerateRequest, LlamaModel
from workhorse.errors import ContextFullError, EngineError

TEXTS = [
    "my card was not charged yet",
    "Please REFUND my order!",
    "how do i reset my password? login error 42",
    "the",
    "where is my new card, it has not arrived yet and i was charged twice for the order",
]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> LlamaModel:
    return LlamaModel(write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert.gguf"), name="tiny-bert")


@pytest.fixture
def engine(bert: LlamaModel):
    engine = Engine(bert, EngineConfig(n_ctx=256, n_batch=64, n_slots=4, prefix_slots=0))
    yield engine
    engine.close()


def _requests(model: LlamaModel) -> list[EvalRequest]:
    return [EvalRequest(model.tokenize(text), pooling="mean") for text in TEXTS]


def test_the_model_is_an_encoder_with_bert_tokenization(bert: LlamaModel, tiny_model: LlamaModel) -> None:
    assert bert.is_encoder and not tiny_model.is_encoder
    assert bert.max_tokens == MAX_SEQ_LENGTH and tiny_model.max_tokens is None
    tokens = bert.tokenize("Refund my ORDER, please!")
    # [CLS] … [SEP], lower-cased, punctuation split off, as BERT's WordPiece tokenizer does.
    assert bert.detokenize(tokens, special=True) == "[CLS] refund my order , please ![SEP]"
    # A word not in the vocabulary is split into word pieces: "refunds" is "refund" + "##s".
    assert bert.tokenize("refunds")[1:-1] == [vocabulary().index("refund"), vocabulary().index("##s")]
    assert bert.tokenize("zebra")[1:-1] == [vocabulary().index("[UNK]")]


def test_long_text_is_truncated_like_sentence_transformers(bert: LlamaModel) -> None:
    long = bert.tokenize(" ".join(["card"] * 100))
    assert len(long) == MAX_SEQ_LENGTH
    # The word pieces past the limit go; [CLS] opens and [SEP] closes as in a short text.
    short = bert.tokenize("card")
    assert long[0] == short[0] and long[-1] == short[-1] and set(long[1:-1]) == {short[1]}
    assert len(bert.tokenize(" ".join(["card"] * 100), add_special=False)) == 100  # the limit applies to whole inputs


def test_sequences_of_different_lengths_share_one_decode(bert: LlamaModel, engine: Engine) -> None:
    requests = _requests(bert)
    assert len({len(r.tokens) for r in requests}) == len(requests)
    batched = engine.evaluate(requests)
    assert engine.stats.decode_calls == 2  # 4 slots: four sequences, then the fifth
    alone = [engine.evaluate([request])[0] for request in requests]
    for together, single, request in zip(batched, alone, requests):
        assert together.pooled is not None and together.pooled.shape == (N_EMBD,)
        np.testing.assert_allclose(together.pooled, single.pooled, atol=1e-5)  # no padding, no leakage
        assert together.n_tokens == len(request.tokens) and together.n_cached == 0
    vectors = np.stack([r.pooled for r in batched])
    assert np.linalg.matrix_rank(vectors) == len(requests)


def test_batches_are_cut_at_n_batch_tokens(bert: LlamaModel, engine: Engine) -> None:
    requests = [EvalRequest(bert.tokenize(" ".join(["refund"] * 20)), pooling="mean") for _ in range(3)]
    assert sum(len(r.tokens) for r in requests) > engine.config.n_batch
    results = engine.evaluate(requests)
    assert engine.stats.decode_calls == 2 and engine.stats.tokens_evaluated == sum(len(r.tokens) for r in requests)
    np.testing.assert_allclose(results[0].pooled, results[2].pooled, atol=1e-5)


def test_hidden_states_and_pooling_agree(bert: LlamaModel, engine: Engine) -> None:
    tokens = bert.tokenize(TEXTS[2])
    n = len(tokens)
    every = engine.evaluate([EvalRequest(tokens, hidden_at=range(n))])[0]
    assert every.hidden is not None and every.hidden.shape == (n, N_EMBD) and every.pooled is None
    mean, last = engine.evaluate([EvalRequest(tokens, pooling="mean"), EvalRequest(tokens, pooling="last", hidden_at=[-1])])
    np.testing.assert_allclose(mean.pooled, every.hidden.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(last.pooled, every.hidden[-1], atol=1e-5)
    np.testing.assert_allclose(last.hidden[0], every.hidden[-1], atol=1e-5)
    # Attention runs both ways: the first token's state depends on the tokens after it.
    shorter = engine.evaluate([EvalRequest(tokens[:3], hidden_at=[0])])[0]
    assert not np.allclose(shorter.hidden[0], every.hidden[0], atol=1e-3)


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (EvalRequest([101, 200, 102], prefix_len=1, pooling="mean"), "no cached prefix"),
        (EvalRequest([101, 200, 102], branches=[[200]]), "no cached prefix or branches"),
        (EvalRequest([101, 200, 102], logits_at=[-1]), "no logits"),
        (EvalRequest([101, 200, 102], logprobs_of=[5]), "no logits"),
        (EvalRequest([101, 200, 102], pooling="mean", layers=(0,)), "intermediate layers"),
        (EvalRequest([101, 200, 102], hidden_at=[3]), "reaches outside"),
        (EvalRequest([], pooling="mean"), "empty"),
    ],
)
def test_what_an_encoder_cannot_do_is_refused(engine: Engine, request_: EvalRequest, needle: str) -> None:
    with pytest.raises(EngineError, match=needle) as caught:
        engine.evaluate([EvalRequest([101, 200, 102], pooling="mean"), request_])
    assert caught.value.hint
    assert engine.stats.decode_calls == 0  # checked before anything runs


def test_a_sequence_longer_than_a_batch_is_refused(engine: Engine) -> None:
    with pytest.raises(ContextFullError, match="at most 64 tokens"):
        engine.evaluate([EvalRequest([101] + [200] * 70 + [102], pooling="mean")])


def test_no_generation_and_no_adapter(bert: LlamaModel, engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot generate"):
        engine.generate([GenerateRequest(bert.tokenize("refund"))])
    adapter_file = tmp_path / "adapter.gguf"
    adapter_file.write_bytes(b"GGUF")
    adapter = Adapter(path=adapter_file, sha256="0" * 64)
    with pytest.raises(EngineError, match="LoRA adapters"):
        Engine(bert, EngineConfig(n_ctx=256, n_batch=64, n_slots=4, prefix_slots=0, adapter=adapter))
    assert engine.tokens_in_use() == 0 and engine.kv_bytes_per_token() == 0.0 and engine.prefix_stats().entries == 0


def test_the_worker_merges_callers_on_an_encoder(bert: LlamaModel, engine: Engine) -> None:
    expected = [r.pooled for r in engine.evaluate(_requests(bert))]
    with EngineWorker(bert, EngineConfig(n_ctx=256, n_batch=64, n_slots=4, prefix_slots=0)) as worker:
        futures = [worker.submit_evaluate([request]) for request in _requests(bert)]
        results = [future.result()[0] for future in futures]
        with pytest.raises(EngineError, match="cannot generate"):
            worker.generate([GenerateRequest(bert.tokenize("refund"))])
    for result, vector in zip(results, expected):
        np.testing.assert_allclose(result.pooled, vector, atol=1e-5)
