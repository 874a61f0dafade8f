"""Score mode's speed beside head mode's feature extraction, on the same items in one process.

Times `ScoreClassifier.classify` (whole-label scoring, calibrated) and `FeatureExtractor.extract`
(the default feature prompt, what a head-mode task runs before its linear head) over the same
items, alternating so that both see the same machine load, and prints items/s for each, their
ratio, the engine's decode counts per item and score mode's accuracy.

Measured (gemma3-270m, bitext-intents.yaml, 100 validation items, batches of 64, 2 threads on a
shared 2-core machine): score 6.2 items/s vs head 53 (8.4x) when the machine was quiet, 2.4 vs
22 (9.0x) under load; the old one-request-per-label-path scoring ran 2.6-2.9 vs 52 (quiet) and
1.3-1.45 vs 21 (15-16x, loaded). Per item: 1 decode of 64 tokens with 52 logits rows (before:
2.25 decodes, 89 tokens, the same rows). Accuracy 33-34 % either way.

    WORKHORSE_HOME=... WORKHORSE_DATASETS=... python benchmarks/zero_shot/score_speed.py \
        benchmarks/zero_shot/bitext-intents.yaml bitext_cs:validation --limit 100
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from workhorse.engine import Engine, EngineStats
from workhorse.evals.datasets import load
from workhorse.tasks.classify import ScoreClassifier
from workhorse.tasks.engines import engine_config, open_engine
from workhorse.tasks.features import FeatureExtractor
from workhorse.tasks.spec import DEFAULT_FEATURE_PROMPT
from workhorse.tasks.store import load_task


def timed(engine: Engine, run: Callable[[list[str]], object], texts: Sequence[str], batch: int) -> tuple[float, EngineStats]:
    """Seconds to run all `texts`, `batch` at a time, and the engine work it took."""
    engine.stats = EngineStats()
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        run(list(texts[start : start + batch]))
    return time.perf_counter() - started, engine.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    data = load(args.data, limit=args.limit)
    examples = [ex for ex in data.examples if ex.label != data.oos_label]
    texts, truth = [ex.text for ex in examples], [ex.label for ex in examples]
    spec, _ = load_task(args.task)
    engine = open_engine(spec.model, engine_config(threads=args.threads, kinds=["classify"]))
    classifier = ScoreClassifier(spec, engine)
    extractor = FeatureExtractor(engine, DEFAULT_FEATURE_PROMPT)
    predictions = classifier.classify(texts[: args.batch])  # warm-up: snapshots of both prefixes
    extractor.extract(texts[: args.batch])

    modes = {"score": classifier.classify, "head": extractor.extract}
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    work: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for mode, run in modes.items():
            seconds, stats = timed(engine, run, texts, args.batch)
            rates[mode].append(len(texts) / seconds)
            work[mode] = {k: v / len(texts) for k, v in asdict(stats).items()} | {"seconds": seconds / len(texts)}
    predictions = classifier.classify(texts)
    accuracy = sum(p.label == t for p, t in zip(predictions, truth, strict=True)) / len(texts)
    ratios = [h / s for s, h in zip(rates["score"], rates["head"], strict=True)]
    print(json.dumps({
        "items": len(texts), "batch": args.batch, "items_per_s": rates, "head_over_score": ratios,
        "per_item_last_repeat": work, "score_accuracy": accuracy,
    }, indent=2))


if __name__ == "__main__":
    main()
