"""Generation: batched and prefixed greedy decoding match the plain loop; sampling honours
seeds, top-p and constraints."""

from __future__ import annotations

import numpy as np
import pytest

from workhorse.engine import Engine, EngineConfig, EvalRequest, GenerateRequest, SamplingParams, generate
from workhorse.engine.sampling import Sampler

PROMPTS = [
    "the refund for my card",
    "hello there",
    "I want to change the password of my account now",
    "where is my money",
    "login error on the server",
    "what time is it",
    "the king and the ship",
    "find the answer",
]


@pytest.fixture(scope="module")
def engine(tiny_model):
    engine = Engine(tiny_model, EngineConfig(n_ctx=2048, n_batch=128, n_slots=16, prefix_slots=4,
                                             kv_type="f32", flash_attention="off"))
    yield engine
    engine.close()


def _reference_greedy(engine: Engine, tokens: list[int], n: int) -> list[int]:
    """Greedy decoding the slow way: re-evaluate the whole sequence for every token."""
    out: list[int] = []
    for _ in range(n):
        logits = engine.evaluate([EvalRequest(tokens + out, logits_at=[-1])])[0].logits[0]
        token = int(np.argmax(logits))
        if engine.model.is_eog(token):
            break
        out.append(token)
    return out


def test_batched_greedy_matches_the_plain_loop(engine, tiny_model):
    prompts = [tiny_model.tokenize(p) for p in PROMPTS]
    params = SamplingParams(max_tokens=12)
    batched = generate(engine, [GenerateRequest(p, params) for p in prompts])
    for prompt, result in zip(prompts, batched):
        assert result.tokens == _reference_greedy(engine, prompt, 12)
    assert engine.free_slots == engine.config.n_slots


def test_greedy_is_identical_with_and_without_the_prefix_cache(engine, tiny_model):
    prefix = tiny_model.tokenize("you answer support tickets with one word. ")
    prompts = [prefix + tiny_model.tokenize(p, add_special=False) for p in PROMPTS]
    params = SamplingParams(max_tokens=16)
    plain = generate(engine, [GenerateRequest(p, params) for p in prompts])
    cached = generate(engine, [GenerateRequest(p, params, prefix_len=len(prefix)) for p in prompts])
    assert [r.tokens for r in plain] == [r.tokens for r in cached]
    assert all(r.n_cached == len(prefix) for r in cached)


def test_more_requests_than_slots_join_as_others_finish(tiny_model):
    engine = Engine(tiny_model, EngineConfig(n_ctx=1024, n_batch=64, n_slots=3, prefix_slots=0,
                                             kv_type="f32", flash_attention="off"))
    try:
        prompts = [tiny_model.tokenize(p) for p in PROMPTS]
        requests = [GenerateRequest(p, SamplingParams(max_tokens=4 + i)) for i, p in enumerate(prompts)]
        results = generate(engine, requests)
        for prompt, req, res in zip(prompts, requests, results):
            assert res.tokens == _reference_greedy(engine, prompt, req.params.max_tokens)
        assert engine.free_slots == 3
    finally:
        engine.close()


def test_seeded_sampling_is_reproducible_and_independent_of_batch(engine, tiny_model):
    prompt = tiny_model.tokenize("the river")
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=42, max_tokens=10)
    alone = generate(engine, [GenerateRequest(prompt, params)])[0].tokens
    others = [GenerateRequest(tiny_model.tokenize(p), SamplingParams(temperature=1.0, seed=i, max_tokens=10))
              for i, p in enumerate(PROMPTS)]
    in_batch = generate(engine, others[:3] + [GenerateRequest(prompt, params)] + others[3:])[3].tokens
    assert alone == in_batch
    other_seed = generate(engine, [GenerateRequest(prompt, SamplingParams(temperature=1.0, seed=7, max_tokens=10))])[0]
    assert other_seed.tokens != alone  # 10 tokens from ~800 at T=1: a collision would be a bug


def test_top_p_keeps_only_the_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.7, seed=0))
    draws = {sampler.sample(logits) for _ in range(300)}
    assert draws == {0, 1}


class _OnlyEvenTokens:
    """A toy constraint: even token ids only, finished after three tokens."""

    def __init__(self, n_vocab: int) -> None:
        self.mask = np.zeros(n_vocab, dtype=bool)
        self.mask[::2] = True
        self.seen: list[int] = []

    def allowed_tokens(self):
        return self.mask

    def advance(self, token: int) -> None:
        self.seen.append(token)

    def is_finished(self) -> bool:
        return len(self.seen) >= 3


def test_constraint_masks_tokens_and_stops_generation(engine, tiny_model):
    constraint = _OnlyEvenTokens(tiny_model.n_vocab)
    result = generate(engine, [GenerateRequest(tiny_model.tokenize("hello"), SamplingParams(max_tokens=20),
                                               constraint=constraint)])[0]
    assert result.finish_reason == "constraint"
    assert len(result.tokens) == 3
    assert all(t % 2 == 0 for t in result.tokens)
    assert constraint.seen == result.tokens


def test_sampling_params_are_validated():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)


def test_chat_template_renders_from_gguf_metadata(tiny_model):
    text = tiny_model.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<|user|>hi\n<|assistant|>"
