"""Examples mode (few-shot classification, no `fit`) on labelled data: K examples per label drawn
from a training split go into a task spec, the task loads (fitting its head on those examples),
and classifies an evaluation split. Prints one JSON object: accuracy, macro-F1, ECE, the most
over-answered label, the load time and items/s, with head-mode items/s on the same items beside
it (examples mode answers through the same head path, so the two should match).

`--eval rest` evaluates on the training split's rows that were not drawn as examples (a
validation set for data that has none); choices (feature prompt, pooling) are made there or on a
validation split, and test splits are only reported.

    WORKHORSE_DATASETS=… python benchmarks/few_shot/examples_mode.py bitext_cs --shots 5 --eval validation
    python benchmarks/few_shot/examples_mode.py smp2019 --shots 5 --eval rest \\
        --prompt '这条消息：“{text}”用一个词概括是：“'
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import replace

from workhorse.evals.datasets import Example, load, sample
from workhorse.evals.metrics import classification_report
from workhorse.tasks.classify import make_classifier
from workhorse.tasks.engines import engine_config, open_engine
from workhorse.tasks.spec import ClassifyOptions, LabelSpec, TaskSpec


def draw_shots(rows: list[Example], shots: int, seed: int) -> tuple[dict[str, list[str]], list[Example]]:
    """`shots` rows per label (seeded; distinct texts), and the rows left over."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append(row)  # type: ignore[index]
    rng = random.Random(seed)
    chosen: dict[str, list[str]] = {}
    taken: set[int] = set()
    for label in sorted(by_label):
        pool = by_label[label][:]
        rng.shuffle(pool)
        texts: list[str] = []
        for row in pool:
            if len(texts) == shots:
                break
            if row.text not in texts:
                texts.append(row.text)
                taken.add(id(row))
        chosen[label] = texts
    return chosen, [row for row in rows if id(row) not in taken]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a dataset name with a train split, e.g. bitext_cs, banking77, smp2019")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", default="validation", help="a split name, or `rest` (train rows not drawn)")
    parser.add_argument("--limit", type=int, help="a stratified sample of the evaluation rows")
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--prompt", help="the feature prompt (default: the spec's default)")
    parser.add_argument("--pooling", default="last", choices=["last", "last+mean"])
    parser.add_argument("--layers", default="", help="comma-separated intermediate layers")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    train = load(f"{args.data}:train")
    shots, rest = draw_shots([ex for ex in train.examples if ex.label is not None], args.shots, args.seed)
    if args.eval == "rest":
        evaluation = replace(train, split="train (rows not drawn)", examples=rest)
        evaluation = sample(evaluation, args.limit, seed=args.seed) if args.limit else evaluation
    else:
        # The split itself is fixed (SMP2019's seeded split too): --seed draws only the examples and the sample.
        evaluation = load(f"{args.data}:{args.eval}")
        evaluation = sample(evaluation, args.limit, seed=args.seed) if args.limit else evaluation
    options = {"mode": "examples", "pooling": args.pooling, "layers": [int(x) for x in args.layers.split(",") if x]}
    if args.prompt:
        options["feature_prompt"] = args.prompt
    spec = TaskSpec(name="few-shot", kind="classify", model=args.model, language=train.language,
                    labels=[LabelSpec(name=label, examples=texts) for label, texts in shots.items()],
                    classify=ClassifyOptions(**options))
    engine = open_engine(spec.model, engine_config(threads=args.threads, kinds=["classify"]))

    started = time.perf_counter()
    classifier = make_classifier(spec, None, engine)
    load_s = time.perf_counter() - started
    texts, truth = [ex.text for ex in evaluation.examples], [ex.label for ex in evaluation.examples]

    started = time.perf_counter()
    predictions = classifier.classify(texts)
    examples_rate = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    classifier.features.extract(texts)  # head mode's whole cost per item: the same forward pass
    head_rate = len(texts) / (time.perf_counter() - started)

    predicted = [p.label for p in predictions]
    report = classification_report(truth, predicted, [p.confidence for p in predictions])
    answered, true = Counter(predicted), Counter(truth)
    worst = max(true, key=lambda label: answered[label] / true[label])
    print(json.dumps({
        "data": args.data, "eval": args.eval, "rows": len(texts), "shots": args.shots, "seed": args.seed,
        "examples": sum(len(t) for t in shots.values()), "labels": len(shots), "model": args.model,
        "feature_prompt": spec.classify.feature_prompt, "pooling": args.pooling, "layers": options["layers"],
        "accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "ece": report["ece"],
        "max_over_answer": {"label": worst, "ratio": answered[worst] / true[worst]},
        "temperature": classifier.head.temperature, "load_s": load_s,
        "items_per_s": {"examples": examples_rate, "head_features": head_rate},
    }, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
