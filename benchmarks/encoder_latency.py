"""Per-item latency of a sentence vector: minilm-l6 (the English encoder) beside gemma3-270m mean
pooling, on the same short texts, in one run on the same machine.

    PYTHONPATH=src python benchmarks/encoder_latency.py [--rounds 5] [--threads 2]

Each text is evaluated alone (one request, one decode: what an interactive call costs) and all
together (one batch); the models take turns round by round, so a load that comes and goes hits
both. Prints the median and spread per item, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from workhorse.engine import Engine, EngineConfig, EvalRequest, LlamaModel
from workhorse.models import resolve

TEXTS = [
    "I was charged twice for the same order, please refund one of them",
    "How do I reset my password?",
    "My card has not arrived yet",
    "cancel my subscription",
    "Where can I see the status of my delivery?",
    "change the shipping address",
]
MODELS = ("minilm-l6", "gemma3-270m")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    engines = {}
    for name in MODELS:
        model = LlamaModel(resolve(name).path, name=name)
        engines[name] = Engine(model, EngineConfig(n_ctx=2048, n_batch=512, n_threads=args.threads, n_slots=8, prefix_slots=0))
    requests = {name: [EvalRequest(e.model.tokenize(t), pooling="mean") for t in TEXTS] for name, e in engines.items()}
    alone: dict[str, list[float]] = {name: [] for name in MODELS}
    batched: dict[str, list[float]] = {name: [] for name in MODELS}
    for name, engine in engines.items():
        engine.evaluate(requests[name])  # warm: first decodes allocate
    for _ in range(args.rounds):
        for name, engine in engines.items():
            for request in requests[name]:
                started = time.perf_counter()
                engine.evaluate([request])
                alone[name].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            engine.evaluate(requests[name])
            batched[name].append((time.perf_counter() - started) * 1000 / len(TEXTS))
    print(f"{len(TEXTS)} short texts, {args.rounds} rounds, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    for name in MODELS:
        tokens = statistics.mean(len(r.tokens) for r in requests[name])
        a, b = alone[name], batched[name]
        print(f"{name:12s} {tokens:5.1f} tokens/item  alone {statistics.median(a):6.1f} ms/item "
              f"(p10 {statistics.quantiles(a, n=10)[0]:.1f}, p90 {statistics.quantiles(a, n=10)[-1]:.1f})  "
              f"batched {statistics.median(b):6.1f} ms/item")
    ratio = statistics.median(alone[MODELS[1]]) / statistics.median(alone[MODELS[0]])
    print(f"{MODELS[0]} is {ratio:.1f}x faster per item alone than {MODELS[1]}")
    for engine in engines.values():
        engine.close()


if __name__ == "__main__":
    main()
