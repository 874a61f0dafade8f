"""The compute floor under the embeddings latency: one short item at a time, in process, no HTTP.

Embeds the `workhorse bench serve` embedding inputs (a ticket's first 20 words) one by one on a
fresh engine and reports the per-item latency percentiles back to back, then again with an idle
pause before each item (as an open-loop client at low rate leaves the machine), to show how much
of a served request's latency is the model's own arithmetic on this machine.

    python benchmarks/embedding_floor.py --model gemma3-270m --data bitext_cs:test --n 300
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from workhorse.engine import EvalRequest
from workhorse.evals.datasets import load
from workhorse.evals.metrics import latency_summary
from workhorse.tasks.engines import engine_config, open_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--data", default="bitext_cs:test")
    parser.add_argument("--n", type=int, default=300, help="items per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pauses", type=float, nargs="*", default=[0.05, 0.2, 0.5], help="idle seconds before each item")
    args = parser.parse_args()

    texts = [" ".join(example.text.split()[:20]) for example in load(args.data).examples][: args.n]
    engine = open_engine(args.model, engine_config(threads=args.threads, kinds=["embed"]))  # as the server runs it
    model = engine.model
    tokens = [model.tokenize(text) for text in texts]
    engine.evaluate([EvalRequest(tokens[0], pooling="mean")])  # warm-up

    def run(pause: float) -> dict:
        latencies = []
        for item in tokens:
            if pause:
                time.sleep(pause)
            started = time.perf_counter()
            engine.evaluate([EvalRequest(item, pooling="mean")])
            latencies.append(time.perf_counter() - started)
        return {"pause_s": pause, "latency_ms": latency_summary(latencies),
                "ms_per_token_median": float(np.median([s * 1000 / len(t) for s, t in zip(latencies, tokens, strict=True)]))}

    lengths = [len(t) for t in tokens]
    report = {
        "model": args.model, "data": args.data, "items": len(tokens), "threads": args.threads,
        "tokens": {"p50": float(np.percentile(lengths, 50)), "p99": float(np.percentile(lengths, 99)), "max": max(lengths)},
        "runs": [run(0.0)] + [run(pause) for pause in args.pauses],
    }
    engine.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
