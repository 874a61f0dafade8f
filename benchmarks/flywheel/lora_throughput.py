"""LoRA training throughput on this machine: tokens per second of forward + backward through the
feature model with adapters on every linear layer, for the classification trainer's batches.

    python benchmarks/flywheel/lora_throughput.py [--models gemma3-270m qwen2.5-coder-0.5b]
        [--rows 320] [--batch-size 16] [--repeats 3] [--threads 2]

Rows are BANKING77 train texts in the default feature prompt; each repeat trains `rows` rows
(one pass) from a fresh adapter and reports tokens/s; the spread over repeats is printed, since
the machine is shared. The first few steps warm up and are not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from workhorse.engine import LlamaModel
from workhorse.evals.datasets import load
from workhorse.flywheel.lora_classify import TorchFeatures
from workhorse.flywheel.torch_model import LoraSettings, add_lora, load_model, require_torch
from workhorse.models import resolve
from workhorse.tasks.features import FeaturePrompt
from workhorse.tasks.spec import DEFAULT_FEATURE_PROMPT

WARMUP_STEPS = 3


def measure(model_name: str, texts: list[str], *, batch_size: int, repeats: int, threads: int) -> dict:
    torch = require_torch()
    path = resolve(model_name).path
    prompt = FeaturePrompt(LlamaModel(path), DEFAULT_FEATURE_PROMPT)
    tokens = [prompt.tokens(text) for text in texts]
    started = time.perf_counter()
    base, _ = load_model(path, threads=threads)
    load_s = time.perf_counter() - started
    model = add_lora(base, LoraSettings(), seed=0)
    rates = []
    for _ in range(repeats):
        reader = TorchFeatures(model, len(prompt.prefix), False, (), "cpu")
        head = torch.nn.Linear(base.config.hidden_size, 77)
        params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        model.train()
        counted, seconds = 0, 0.0
        for step, start in enumerate(range(0, len(tokens), batch_size)):
            batch = tokens[start : start + batch_size]
            began = time.perf_counter()
            logits = head(reader(batch))
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= WARMUP_STEPS:
                seconds += time.perf_counter() - began
                counted += sum(len(t) for t in batch)
        rates.append(counted / seconds)
    return {"model": model_name, "load_s": round(load_s, 1), "tokens_per_item": round(float(np.mean([len(t) for t in tokens])), 1),
            "tokens_per_s": [round(r, 1) for r in rates], "median_tokens_per_s": round(statistics.median(rates), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gemma3-270m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    texts = [ex.text for ex in load("banking77:train").examples[: args.rows]]
    for name in args.models:
        print(json.dumps(measure(name, texts, batch_size=args.batch_size, repeats=args.repeats, threads=args.threads)), flush=True)


if __name__ == "__main__":
    main()
