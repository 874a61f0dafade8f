"""`workhorse bench classify`: workhorse's classifier beside the naive chat baseline, in one run.

The baseline is what a sceptic would build: a chat prompt with the label list in the system
message, generate, parse the label, through llama-cpp-python's high-level `Llama` (which reuses
the common prompt prefix between calls). It runs on qwen2.5-coder-0.5b (the seed's setup) and on
the model workhorse itself uses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from workhorse.evals.datasets import Dataset


@dataclass
class SideResult:
    name: str
    model: str
    accuracy: float
    items_per_s: float
    invalid_rate: float = 0.0
    n: int = 0
    p50_ms: float = 0.0

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def parse_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label the model named: an exact match of the first line, else the first label mentioned."""
    by_norm = {_normalise(label): label for label in labels}
    first = _normalise(answer.strip().splitlines()[0]) if answer.strip() else ""
    if first in by_norm:
        return by_norm[first]
    normalised = _normalise(answer)
    hits = [(normalised.find(norm), label) for norm, label in by_norm.items() if norm and norm in normalised]
    return min(hits)[1] if hits else None


def chat_baseline(model_path: str, model_name: str, data: Dataset, *, threads: int, limit: int) -> SideResult:
    """Label list in the system message, one generated answer per item, parsed."""
    import llama_cpp

    from workhorse.engine.model import _extra_buffer_types_safe, _llama

    # llama-cpp-python's Llama cannot switch off extra buffer types like the engine does.
    if not _extra_buffer_types_safe(_llama()):
        raise RuntimeError("llama.cpp was built with AMX; rebuild it with scripts/llama-cmake-args to run the baseline")
    llm = llama_cpp.Llama(model_path, n_ctx=2048, n_threads=threads, n_batch=512, verbose=False)
    labels = data.labels
    system = (
        "You are a customer support ticket classifier. Answer with exactly one label from this list and "
        "nothing else:\n" + "\n".join(labels)
    )
    rows = data.examples[:limit]
    correct = invalid = 0
    latencies = []
    started = time.perf_counter()
    for example in rows:
        t0 = time.perf_counter()
        reply = llm.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": example.text}],
            max_tokens=16,
            temperature=0.0,
        )
        latencies.append(time.perf_counter() - t0)
        label = parse_label(reply["choices"][0]["message"]["content"] or "", labels)
        invalid += label is None
        correct += label == example.label
    wall = time.perf_counter() - started
    latencies.sort()
    return SideResult(
        name="chat baseline",
        model=model_name,
        accuracy=correct / len(rows),
        items_per_s=len(rows) / wall,
        invalid_rate=invalid / len(rows),
        n=len(rows),
        p50_ms=1000 * latencies[len(latencies) // 2],
    )


def workhorse_side(task: str, data: Dataset, *, threads: int) -> tuple[SideResult, dict]:
    """The task over the data in batches (throughput), plus per-item latency on a sample."""
    from workhorse.bench.engine_bench import timed
    from workhorse.engine import EvalRequest
    from workhorse.tasks.classify import make_classifier
    from workhorse.tasks.engines import open_task_engine
    from workhorse.tasks.store import load_task

    spec, directory = load_task(task)
    engine = open_task_engine(spec, directory, threads=threads)
    classifier = make_classifier(spec, directory, engine)
    texts = [ex.text for ex in data.examples]
    classifier.classify(texts[:8])  # warm the prefix cache and the weights
    started = time.perf_counter()
    predictions = []
    for i in range(0, len(texts), 64):
        predictions += classifier.classify(texts[i : i + 64])
    wall = time.perf_counter() - started
    latencies, forward = [], []
    for text in texts[:50]:
        t0 = time.perf_counter()
        classifier.classify([text])
        latencies.append(time.perf_counter() - t0)
        # One forward pass over the ticket's own tokens, nothing else: the head mode's yardstick.
        own = engine.model.tokenize(text)
        forward.append(timed(lambda: engine.evaluate([EvalRequest(own, hidden_at=[-1])])))
    latencies.sort()
    forward.sort()
    prompt = engine.model.tokenize("word " * 600, add_special=False)[:512]
    prompt_s = min(timed(lambda: engine.evaluate([EvalRequest(prompt, logits_at=[-1])])) for _ in range(2))
    correct = sum(p.label == ex.label for p, ex in zip(predictions, data.examples))
    # The floor: one forward pass over each item's own tokens at the measured prompt rate.
    own_tokens = sum(len(engine.model.tokenize(t, add_special=False)) for t in texts)
    result = SideResult(
        name="workhorse",
        model=spec.model,
        accuracy=correct / len(texts),
        items_per_s=len(texts) / wall,
        n=len(texts),
        p50_ms=1000 * latencies[len(latencies) // 2],
    )
    extra = {
        "task": spec.name,
        "version": spec.version,
        "mode": spec.classify.mode,
        "own_tokens_per_item": own_tokens / len(texts),
        "prompt_tps": len(prompt) / prompt_s,
        "forward_pass_p50_ms": 1000 * forward[len(forward) // 2],
        "latency_over_forward_pass": latencies[len(latencies) // 2] / forward[len(forward) // 2],
        "floor_items_per_s": len(prompt) / prompt_s / (own_tokens / len(texts)),
        "prefix_cache_hit_rate": engine.prefix_stats().hit_rate,
        "model_path": str(engine.model.path),
    }
    engine.close()
    return result, extra


def constrained_overhead(model: str, *, threads: int, repeats: int = 3) -> dict:
    """Per-token cost of JSON-Schema-constrained decoding against plain decoding: the same
    prompt (the ticket-entities task), greedy, the same number of tokens, timed per token."""
    import statistics

    from workhorse.engine import SamplingParams
    from workhorse.tasks.engines import engine_config, open_engine
    from workhorse.tasks.store import load_task
    from workhorse.tasks.structured import StructuredGenerator

    spec, _ = load_task("ticket-entities")
    engine = open_engine(model, engine_config(threads=threads, n_slots=4))
    generator = StructuredGenerator(spec, engine)
    text = "I need a refund of 40 euros for order 00123842, the delivery to Lyon never came"
    template = generator.run([text])[0]  # warms the prefix cache and the tokenizer bridge
    plain, constrained = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        [c] = engine.generate([generator.request(text, SamplingParams(max_tokens=96))])
        constrained.append((time.perf_counter() - start) / len(c.tokens))
        n = len(c.tokens)
        unconstrained = generator.request(text, SamplingParams(max_tokens=n, ignore_eos=True))
        unconstrained.constraint = None
        start = time.perf_counter()
        engine.generate([unconstrained])
        plain.append((time.perf_counter() - start) / n)
    engine.close()
    per_token_plain, per_token_constrained = statistics.median(plain), statistics.median(constrained)
    return {
        "model": model,
        "tokens": n,
        "ms_per_token_plain": 1000 * per_token_plain,
        "ms_per_token_constrained": 1000 * per_token_constrained,
        "overhead": per_token_constrained / per_token_plain - 1,
        "valid": template.valid,
    }
