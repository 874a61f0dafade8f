"""Two tasks with different LoRA adapters on one model: a context per adapter, or one context
that switches adapters between batches?

Two classify-like tasks (head-mode features: a ~150-token task prompt as the cached prefix, the
item, the last token's hidden state), each with its own random rank-8 adapter on attn_q and
attn_v, take turns in batches of `--batch` items. Designs, each run in a fresh process:

  none       one context, no adapter: the floor (what the adapters' own arithmetic costs)
  a          a context per adapter on the same loaded weights, batches taken in turn (served design)
  a-threads  the same two contexts, each on its own engine thread, both tasks' clients at once
             (as a server runs them: each engine with `--threads` llama.cpp threads)
  a-split    as a-threads, each engine with half the threads (the two together use `--threads`)
  b-clear    one context, the adapter switched before each other task's batch, prefix snapshots
             dropped at each switch (they were computed under the other adapter)
  b-keyed    as b-clear, the snapshots kept: what snapshots keyed by adapter would give (correct
             here only because the two tasks' prompts differ)

Reported per design: items/s (both tasks together), the resident memory the design adds over one
context without adapters (RSS delta after the runs, and the KV cache of a context), and for b the
cost of one switch (a one-item batch right after a switch, less one without). Medians with
min–max over `--repeats` fresh processes, the designs interleaved within each repeat.

    WORKHORSE_HOME=/tmp/whbench python benchmarks/adapters/context_per_adapter.py --repeats 3

Figures and the conclusion: docs/engine.md, "LoRA adapters".
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from workhorse.bench.engine_bench import rss_mb
from workhorse.engine import Adapter, Engine, EngineWorker, LlamaModel, write_adapter
from workhorse.models import resolve
from workhorse.tasks.engines import engine_config
from workhorse.tasks.features import FeatureExtractor

DESIGNS = ("none", "a", "a-threads", "a-split", "b-clear", "b-keyed")

PROMPTS = (
    "You sort messages that customers send to a bank's support desk. Each message is about one thing: a card "
    "that was lost, stolen, declined or has not arrived; a transfer that is pending, failed or went to the wrong "
    "account; a refund, a charge the customer does not recognise, a fee, an exchange rate; a password, a login, "
    "a verification of identity; a top-up, a withdrawal at a cash machine, an account that should be closed. "
    "Read the message, think of what the customer needs, and say it in one word.\n"
    'Message: "{text}"\nIn one word, the customer needs: "',
    "You route tickets from the users of an online shop. A ticket is about an order that has not arrived or came "
    "damaged, a parcel the courier lost, a return and its refund, a payment that failed or was taken twice, a "
    "discount code that does not work, a change of address, a product question, an account that is locked, a "
    "newsletter to stop, or a complaint about the service. Read the ticket, decide which team handles it and "
    "answer with the team's name in one word.\n"
    'Ticket: "{text}"\nTeam: "',
)
SUBJECTS = ["my card", "the transfer", "my refund", "the parcel", "my password", "the payment", "my order", "the fee",
            "my account", "the cash machine", "the exchange rate", "the discount code"]
PROBLEMS = ["has not arrived yet", "was declined twice today", "is still pending after three days", "looks wrong",
            "was charged two times", "does not work any more", "went to the wrong place", "needs to be changed"]
TAILS = ["", " please help", ", what should I do?", " and I am travelling tomorrow", ". This is urgent.",
         " since last week", ", can you check?"]


def items(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(PROBLEMS)}{rng.choice(TAILS)}" for _ in range(n)]


def random_adapter(model: LlamaModel, path: Path, *, rank: int, seed: int) -> Adapter:
    """A random rank-`rank` adapter on every layer's attn_q and attn_v (its values do not change the cost)."""
    arch = model.architecture
    head_dim = int(model.meta(f"{arch}.attention.key_length") or model.n_embd // model.n_head)
    value_dim = int(model.meta(f"{arch}.attention.value_length") or head_dim)
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in range(model.n_layer):
        for name, n_out in (("attn_q", model.n_head * head_dim), ("attn_v", model.n_head_kv * value_dim)):
            a = rng.standard_normal((rank, model.n_embd)) / np.sqrt(model.n_embd)
            b = 0.01 * rng.standard_normal((n_out, rank))
            weights[f"blk.{layer}.{name}.weight"] = (a, b)
    return Adapter.from_file(write_adapter(path, arch, weights, alpha=2 * rank))


def switch(engine: Engine, model: LlamaModel, adapter: Adapter, *, keep_snapshots: bool) -> None:
    """Design b: make `adapter` the context's one adapter (llama.cpp sizes the graph again at the next decode)."""
    llama_cpp = engine._llama_cpp  # the engine has no switch of its own: it is built for design a
    handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(model.adapter_handle(adapter))
    llama_cpp.llama_set_adapters_lora(engine._ctx, handles, 1, (ctypes.c_float * 1)(adapter.scale))
    if not keep_snapshots:
        engine.clear_prefixes()


def run_design(design: str, model_path: Path, workdir: Path, *, threads: int, n_items: int, batch: int, rank: int,
               rounds: int) -> dict:
    """One design in this process: items/s over `rounds` timed rounds (after one warm-up round)."""
    model = LlamaModel(model_path)
    config = engine_config(threads=threads, kinds=["classify"])
    adapters = [random_adapter(model, workdir / f"adapter{k}.gguf", rank=rank, seed=k) for k in range(2)]
    texts = [items(n_items, seed=10 + k) for k in range(2)]
    batches = [(k, texts[k][i : i + batch]) for i in range(0, n_items, batch) for k in range(2)]  # A, B, A, B, …

    if design == "none" or design.startswith("b"):
        engine = Engine(model, replace(config, adapter=None if design == "none" else adapters[0]))
        extractors = [FeatureExtractor(engine, prompt) for prompt in PROMPTS]
        current = [0]

        def run(k: int, chunk: list[str]) -> None:
            if design.startswith("b") and current[0] != k:
                switch(engine, model, adapters[k], keep_snapshots=design == "b-keyed")
                current[0] = k
            extractors[k].extract(chunk, batch_size=batch)

        engines = [engine]
    elif design == "a":
        engines = [Engine(model, replace(config, adapter=adapter)) for adapter in adapters]
        extractors = [FeatureExtractor(engine, prompt) for engine, prompt in zip(engines, PROMPTS)]

        def run(k: int, chunk: list[str]) -> None:
            extractors[k].extract(chunk, batch_size=batch)
    else:  # a-threads, a-split
        per_engine = max(1, threads // 2) if design == "a-split" else threads
        engines = [EngineWorker(model, replace(config, adapter=adapter, n_threads=per_engine)) for adapter in adapters]
        extractors = [FeatureExtractor(worker, prompt) for worker, prompt in zip(engines, PROMPTS)]

    def one_round() -> float:
        started = time.perf_counter()
        if design in ("a-threads", "a-split"):
            import threading

            clients = [threading.Thread(target=lambda k=k: [extractors[k].extract(c, batch_size=batch)
                                                             for j, c in batches if j == k]) for k in range(2)]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
        else:
            for k, chunk in batches:
                run(k, chunk)
        return time.perf_counter() - started

    rss_base = rss_mb()
    one_round()  # warm-up: weights paged in, snapshots made, graphs reserved
    seconds = [one_round() for _ in range(rounds)]
    result = {"design": design, "items_per_s": 2 * n_items / statistics.median(seconds), "rss_mb": rss_mb(),
              "rss_before_warmup_mb": rss_base}
    if design.startswith("b"):
        result["switch_ms"] = switch_cost(engine, model, adapters, extractors, texts, keep=design == "b-keyed")
    if isinstance(engines[0], Engine):
        result["kv_cache_mb"] = engines[0].kv_cache_bytes() / 2**20
    for engine in engines:
        engine.close()
    return result


def switch_cost(engine: Engine, model: LlamaModel, adapters: list[Adapter], extractors, texts, *, keep: bool) -> float:
    """Median ms a one-item batch of task B takes right after switching from A, less the same batch
    with no switch before it."""
    with_switch, without = [], []
    for i in range(12):
        switch(engine, model, adapters[0], keep_snapshots=keep)
        extractors[0].extract(texts[0][i : i + 1])
        started = time.perf_counter()
        switch(engine, model, adapters[1], keep_snapshots=keep)
        extractors[1].extract(texts[1][i : i + 1])
        with_switch.append(time.perf_counter() - started)
        started = time.perf_counter()
        extractors[1].extract(texts[1][i + 1 : i + 2])
        without.append(time.perf_counter() - started)
    return 1000 * (statistics.median(with_switch) - statistics.median(without))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--items", type=int, default=64, help="Items per task per round.")
    parser.add_argument("--batch", type=int, default=16, help="Items per batch (a task's micro-batch).")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="Timed rounds per run (after one warm-up round).")
    parser.add_argument("--repeats", type=int, default=3, help="Fresh processes per design.")
    parser.add_argument("--designs", default=",".join(DESIGNS))
    parser.add_argument("--json", type=Path, help="Also write the figures and every run here.")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one design in this process, print JSON
    args = parser.parse_args()
    model_path = resolve(args.model).path

    if args.one:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(run_design(args.one, model_path, Path(workdir), threads=args.threads, n_items=args.items,
                                        batch=args.batch, rank=args.rank, rounds=args.rounds)))
        return

    runs: dict[str, list[dict]] = {design: [] for design in args.designs.split(",")}
    for repeat in range(args.repeats):
        for design in runs:
            command = [sys.executable, __file__, "--one", design, "--model", args.model, "--threads", str(args.threads),
                       "--items", str(args.items), "--batch", str(args.batch), "--rank", str(args.rank),
                       "--rounds", str(args.rounds)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            runs[design].append(json.loads(output.strip().splitlines()[-1]))
            print(f"repeat {repeat + 1}: {design}: {runs[design][-1]['items_per_s']:.1f} items/s", file=sys.stderr)
    report = summarise(runs)
    if args.json:
        settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, "designs": report, "runs": runs}, indent=2))
    print_table(report, args)


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    base_rss = statistics.median(r["rss_mb"] for r in runs["none"]) if "none" in runs else None
    report = {}
    for design, results in runs.items():
        entry = {"items_per_s": _spread([r["items_per_s"] for r in results]), "rss_mb": _spread([r["rss_mb"] for r in results])}
        if base_rss is not None:
            entry["rss_over_none_mb"] = _spread([r["rss_mb"] - base_rss for r in results])
        if "switch_ms" in results[0]:
            entry["switch_ms"] = _spread([r["switch_ms"] for r in results])
        if "kv_cache_mb" in results[0]:
            entry["kv_cache_mb"] = results[0]["kv_cache_mb"]
        report[design] = entry
    return report


def print_table(report: dict[str, dict], args: argparse.Namespace) -> None:
    def cell(spread: dict[str, float] | None, fmt: str = "{:.1f}") -> str:
        if spread is None:
            return "–"
        return f"{fmt.format(spread['median'])} ({fmt.format(spread['min'])}–{fmt.format(spread['max'])})"

    print(f"{args.model}, {args.threads} threads, 2 tasks × {args.items} items per round in batches of {args.batch}, "
          f"rank-{args.rank} adapters on attn_q/attn_v; medians (min–max) over {args.repeats} processes")
    print(f"{'design':<10} {'items/s':>20} {'RSS over none, MiB':>22} {'one switch, ms':>20}")
    for design, entry in report.items():
        print(f"{design:<10} {cell(entry['items_per_s']):>20} {cell(entry.get('rss_over_none_mb'), '{:.0f}'):>22} "
              f"{cell(entry.get('switch_ms')):>20}")
    kv = next((e["kv_cache_mb"] for e in report.values() if "kv_cache_mb" in e), None)
    if kv is not None:
        print(f"KV cache of one context: {kv:.0f} MiB")


if __name__ == "__main__":
    main()
