"""Batched, prefixed and lone evaluation of a sequence must agree.

Tolerance: the tiny model is all float32 and the exact tests keep the KV cache in float32 with
flash attention off, so the only differences are summation order inside llama.cpp's kernels
(different batch shapes, different KV cells): 1e-4 absolute on logits and hidden states of
magnitude O(1–10). With the defaults (float16 KV, flash attention, which rounds Q·K to float16)
the same comparisons differ by up to ~5e-3; `test_defaults_agree_within_float16_rounding`
holds those to 2e-2.
"""

from __future__ import annotations

import numpy as np
import pytest

from workhorse.engine import Engine, EngineConfig, EvalRequest
from workhorse.errors import ContextFullError, EngineError

ATOL = 1e-4

TEXTS = [
    "the refund for my card",
    "hello",
    "I want to change the password of my account now",
    "a",
    "where is my money, the transfer was made two days ago and it is still not there",
    "login error on the server",
    "what time is it",
    "the king and the ship",
    "x y z",
    "find the answer to the problem with the test record",
    "open",
    "my card was declined at the store",
    "how do I add a user",
    "the river and the mountain and the sea",
    "stop",
    "the quick brown fox jumps over the lazy dog",
]


@pytest.fixture(scope="module")
def engine(tiny_model):
    engine = Engine(tiny_model, EngineConfig(n_ctx=2048, n_batch=128, n_slots=16, prefix_slots=4, kv_type="f32", flash_attention="off"))
    yield engine
    engine.close()


def _request(tokens, prefix_len=0):
    return EvalRequest(tokens, prefix_len=prefix_len, logits_at=[-1, -2] if len(tokens) - prefix_len > 1 else [-1],
                       hidden_at=[-1], pooling="mean")


def test_lone_versus_batch_of_16_mixed_lengths(engine, tiny_model):
    sequences = [tiny_model.tokenize(t) for t in TEXTS]
    assert len({len(s) for s in sequences}) > 8  # really mixed lengths
    alone = [engine.evaluate([_request(s)])[0] for s in sequences]
    together = engine.evaluate([_request(s) for s in sequences])
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a.logits, b.logits, atol=ATOL)
        np.testing.assert_allclose(a.hidden, b.hidden, atol=ATOL)
        np.testing.assert_allclose(a.pooled, b.pooled, atol=ATOL)


def test_batch_larger_than_n_batch_is_split_and_still_agrees(engine, tiny_model):
    long = tiny_model.tokenize(" ".join(TEXTS))  # > n_batch=128 tokens with the others
    sequences = [long] + [tiny_model.tokenize(t) for t in TEXTS[:6]]
    assert sum(map(len, sequences)) > 128
    alone = [engine.evaluate([_request(s)])[0] for s in sequences]
    together = engine.evaluate([_request(s) for s in sequences])
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a.logits, b.logits, atol=ATOL)
        np.testing.assert_allclose(a.hidden, b.hidden, atol=ATOL)


def test_reused_prefix_gives_the_same_outputs(engine, tiny_model):
    prefix = tiny_model.tokenize("you are a support router. the labels are refund, card, login, other. ")
    items = [tiny_model.tokenize(t, add_special=False) for t in TEXTS]
    plain = engine.evaluate([EvalRequest(prefix + it, logits_at=[-1], hidden_at=[-1]) for it in items])
    hits_before = engine.prefix_stats().hits
    cached = engine.evaluate([EvalRequest(prefix + it, prefix_len=len(prefix), logits_at=[-1], hidden_at=[-1]) for it in items])
    for a, b in zip(plain, cached):
        np.testing.assert_allclose(a.logits, b.logits, atol=ATOL)
        np.testing.assert_allclose(a.hidden, b.hidden, atol=ATOL)
    assert all(r.n_cached == len(prefix) for r in cached)
    # One miss evaluates the prefix, the other 15 requests hit the snapshot.
    assert engine.prefix_stats().hits - hits_before >= len(items) - 1


def test_hidden_only_batches_leave_logits_intact(engine, tiny_model):
    tokens = tiny_model.tokenize("my card was declined at the store")
    first = engine.evaluate([EvalRequest(tokens, logits_at=[-1])])[0].logits
    hidden_only = engine.evaluate([EvalRequest(tokens, hidden_at=[-1])])[0].hidden
    both = engine.evaluate([EvalRequest(tokens, logits_at=[-1], hidden_at=[-1])])[0]
    again = engine.evaluate([EvalRequest(tokens, logits_at=[-1])])[0].logits
    np.testing.assert_allclose(first, again, atol=ATOL)
    np.testing.assert_allclose(first, both.logits, atol=ATOL)
    np.testing.assert_allclose(hidden_only, both.hidden, atol=ATOL)
    # The hidden state really is the pre-projection state: projecting it reproduces the logits.
    assert np.isfinite(hidden_only).all() and np.abs(hidden_only).sum() > 0


def test_last_pooling_is_the_last_hidden_state(engine, tiny_model):
    tokens = tiny_model.tokenize("the river and the sea")
    r = engine.evaluate([EvalRequest(tokens, hidden_at=[-1], pooling="last")])[0]
    np.testing.assert_array_equal(r.pooled, r.hidden[0])


def test_kv_cells_are_freed_after_every_request(engine, tiny_model):
    prefix = tiny_model.tokenize("instructions that every request shares. ")
    engine.evaluate([EvalRequest(prefix + [5], prefix_len=len(prefix), logits_at=[-1])])
    baseline = engine.state_bytes()
    sequences = [tiny_model.tokenize(t, add_special=False) for t in TEXTS]
    for i in range(1000):
        item = sequences[i % len(sequences)]
        if i % 2:
            engine.evaluate([EvalRequest(prefix + item, prefix_len=len(prefix), logits_at=[-1])])
        else:
            engine.evaluate([EvalRequest(item, hidden_at=[-1], pooling="mean")])
    assert engine.state_bytes() == baseline
    assert all(engine.seq_pos_max(slot) == -1 for slot in range(engine.config.n_slots))
    assert engine.free_slots == engine.config.n_slots


def test_errors_name_the_problem(engine, tiny_model):
    with pytest.raises(EngineError, match="empty"):
        engine.evaluate([EvalRequest([])])
    with pytest.raises(ContextFullError, match="do not fit"):
        engine.evaluate([EvalRequest([5] * (engine.n_ctx + 1), logits_at=[-1])])
    prefix = tiny_model.tokenize("some prefix here")
    with pytest.raises(EngineError, match="outside"):
        engine.evaluate([EvalRequest(prefix + [7, 8], prefix_len=len(prefix), logits_at=[0])])
    # A failed request returns its slot.
    assert engine.free_slots == engine.config.n_slots


def test_defaults_agree_within_float16_rounding(tiny_model):
    engine = Engine(tiny_model, EngineConfig(n_ctx=1024, n_batch=128, n_slots=16, prefix_slots=2))
    try:
        sequences = [tiny_model.tokenize(t) for t in TEXTS]
        alone = [engine.evaluate([_request(s)])[0] for s in sequences]
        together = engine.evaluate([_request(s) for s in sequences])
        for a, b in zip(alone, together):
            np.testing.assert_allclose(a.logits, b.logits, atol=2e-2)
            np.testing.assert_allclose(a.pooled, b.pooled, atol=2e-2)
            assert a.logits[0].argmax() == b.logits[0].argmax()
    finally:
        engine.close()


def test_intermediate_layers_agree_alone_and_batched(engine, tiny_model):
    sequences = [tiny_model.tokenize(t) for t in TEXTS[:6]]
    req = lambda s: EvalRequest(s, hidden_at=[-1], pooling="mean", layers=(0,))  # noqa: E731
    alone = [engine.evaluate([req(s)])[0] for s in sequences]
    together = engine.evaluate([req(s) for s in sequences])
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a.layer_hidden[0], b.layer_hidden[0], atol=ATOL)
        np.testing.assert_allclose(a.layer_pooled[0], b.layer_pooled[0], atol=ATOL)
        assert not np.allclose(a.layer_hidden[0], a.hidden)  # a different layer, not the final state


def test_the_last_layer_is_refused_with_a_hint(engine, tiny_model):
    with pytest.raises(EngineError, match="last one"):
        engine.evaluate([EvalRequest(tiny_model.tokenize("hello"), hidden_at=[-1], layers=(tiny_model.n_layer - 1,))])
    assert engine.free_slots == engine.config.n_slots


def _branch_rows_alone(engine, tokens, branches):
    """Each branch prefix's logits row from plain requests: tokens + branch, logits after every token."""
    rows = {}
    for branch in branches:
        n = len(tokens)
        logits = engine.evaluate([EvalRequest(tokens + branch, logits_at=list(range(n - 1, n + len(branch))))])[0].logits
        rows.update({tuple(branch[:j]): logits[j] for j in range(len(branch) + 1)})
    return rows


BRANCHES = [[5, 9, 4], [5, 9, 6], [5, 11], [7, 11, 13], [8]]  # they share (5,) and (5, 9)
N_NODES = 9  # distinct non-empty prefixes of BRANCHES


def test_branches_give_what_evaluating_each_continuation_alone_gives(engine, tiny_model):
    instructions = tiny_model.tokenize("you route tickets. labels: refund, card, login. input:")
    items = [tiny_model.tokenize(t, add_special=False) for t in (" my card was declined label:", " refund me label:")]
    expected = [_branch_rows_alone(engine, instructions + item, BRANCHES) for item in items]
    assert len(expected[0]) == 1 + N_NODES  # and the root row
    plain = EvalRequest(instructions + items[0], logits_at=[-1])
    engine.evaluate([EvalRequest(instructions + items[0], prefix_len=len(instructions))])  # the instructions' snapshot
    evaluated_before = engine.stats.tokens_evaluated
    got = engine.evaluate([
        EvalRequest(instructions + items[0], prefix_len=len(instructions), branches=BRANCHES, logits_at=[-1]),
        plain,
        EvalRequest(instructions + items[1], prefix_len=len(instructions), branches=BRANCHES),
    ])
    # Each item's tokens and each distinct branch prefix are evaluated once.
    assert engine.stats.tokens_evaluated - evaluated_before == sum(map(len, items)) + 2 * N_NODES + len(plain.tokens)
    for result, rows in zip((got[0], got[2]), expected):
        assert result.branch_logits.keys() == rows.keys()
        for node, row in rows.items():
            np.testing.assert_allclose(result.branch_logits[node], row, atol=ATOL)
    np.testing.assert_array_equal(got[0].logits[0], got[0].branch_logits[()])
    np.testing.assert_allclose(got[1].logits[0], expected[0][()], atol=ATOL)
    assert got[1].branch_logits == {}
    assert engine.free_slots == engine.config.n_slots


def test_branches_beyond_the_free_slots_go_in_groups(engine, tiny_model):
    tokens = tiny_model.tokenize("you route tickets. input: my card was declined label:")
    expected = _branch_rows_alone(engine, tokens, BRANCHES)
    held = [engine.acquire_slot() for _ in range(engine.config.n_slots - 2)]  # as if generations ran
    try:
        result = engine.evaluate([EvalRequest(tokens, prefix_len=4, branches=BRANCHES)])[0]
    finally:
        for slot in held:
            engine.release_slot(slot)
    assert result.branch_logits.keys() == expected.keys()
    for node, row in expected.items():
        np.testing.assert_allclose(result.branch_logits[node], row, atol=ATOL)
    assert engine.free_slots == engine.config.n_slots


def test_logprobs_of_gives_those_tokens_log_softmax_instead_of_the_rows(engine, tiny_model):
    tokens = tiny_model.tokenize("you route tickets. input: my card was declined label:")
    ids = [5, 9, 11, 4]
    rows = engine.evaluate([EvalRequest(tokens, logits_at=[-1, -2], branches=BRANCHES)])[0]
    picked = engine.evaluate([EvalRequest(tokens, logits_at=[-1, -2], branches=BRANCHES, logprobs_of=ids)])[0]

    def log_softmax(row):
        row = row.astype(np.float64) - row.max()
        return row - np.log(np.exp(row).sum())

    np.testing.assert_allclose(picked.logits, [log_softmax(row)[ids] for row in rows.logits], atol=1e-5)
    assert picked.branch_logits.keys() == rows.branch_logits.keys()
    for node, row in rows.branch_logits.items():
        np.testing.assert_allclose(picked.branch_logits[node], log_softmax(row)[ids], atol=1e-5)
