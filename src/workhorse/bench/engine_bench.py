"""`workhorse bench engine`: what the llama.cpp engine does per model on this machine, next to
the physical floor.

Each model is measured in its own process, so resident memory is that model's alone. Every
figure is the median of `repeats` runs, with the min and max beside it; the machine is shared
and noisy, so compare within one run.

The floor: a forward pass over one token costs 2 FLOPs per weight it multiplies (the body of
the model, plus the output projection for each token whose logits are needed; attention over
the context is left out, which is small at these lengths). Dividing by the machine's measured
dense GEMM rate gives the time the arithmetic alone would take at full speed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PREFIX_TOKENS = 400
SUFFIX_TOKENS = 30
BATCH_SEQUENCES = 16
DECODE_STEPS = 32
PROMPT_TOKENS = 512

_FILLER = (
    "Customer support tickets arrive all day. Each one says what the customer wants: a refund, a "
    "new card, a password reset, a delivery update, an address change, a complaint about a fee. "
    "Route every ticket to exactly one intent and answer with the intent's name. "
)


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


def measure_gemm_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Dense float32 matrix multiply rate of this machine (best of `repeats`), the ceiling for
    what any matmul-bound engine can reach."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_model(path: str, name: str, *, threads: int, repeats: int, gemm_gflops: float) -> dict:
    """All engine figures for one model (runs in the child process)."""
    from workhorse.engine import Engine, EvalRequest, GenerateRequest, LlamaModel, SamplingParams
    from workhorse.tasks.engines import engine_config

    rss_start = rss_mb()
    model = LlamaModel(path, name=name)
    engine = Engine(model, engine_config(threads=threads, n_slots=BATCH_SEQUENCES))
    # Touch every weight once so "after load" is the resident model, not a cold mmap.
    engine.evaluate([EvalRequest([model.bos if model.bos >= 0 else 0] * 8, logits_at=[-1])])
    rss_after_load = rss_mb()

    text_tokens = model.tokenize(_FILLER * 40, add_special=False)
    prompt = text_tokens[:PROMPT_TOKENS]
    prefix = text_tokens[:PREFIX_TOKENS]
    suffixes = [text_tokens[PREFIX_TOKENS + 7 * i : PREFIX_TOKENS + 7 * i + SUFFIX_TOKENS] for i in range(repeats + 1)]

    # Prompt processing: one 512-token sequence, logits for the last token.
    prompt_s = [timed(lambda: engine.evaluate([EvalRequest(prompt, logits_at=[-1])])) for _ in range(repeats)]

    # Decoding: one sequence, then 16 at once, DECODE_STEPS tokens each (greedy, EOS ignored).
    params = SamplingParams(max_tokens=DECODE_STEPS, ignore_eos=True)
    short_prompts = [text_tokens[i * 11 : i * 11 + 16] for i in range(BATCH_SEQUENCES)]

    def decode_run(n_seqs: int) -> float:
        requests = [GenerateRequest(short_prompts[i], params) for i in range(n_seqs)]
        prefill = timed(lambda: engine.evaluate([EvalRequest(r.tokens, logits_at=[-1]) for r in requests]))
        total = timed(lambda: engine.generate(requests))
        return max(total - prefill, 1e-9)  # decode time: generation minus its own prefill

    single_s = [decode_run(1) for _ in range(repeats)]
    batched_s = [decode_run(BATCH_SEQUENCES) for _ in range(repeats)]
    decode_tps = Spread.of([DECODE_STEPS / s for s in single_s])
    batched_tps = Spread.of([BATCH_SEQUENCES * DECODE_STEPS / s for s in batched_s])

    # Prefix reuse: 400 cached + 30 new tokens versus the 30 tokens alone, interleaved.
    engine.evaluate([EvalRequest(prefix + suffixes[0], prefix_len=len(prefix), logits_at=[-1])])
    with_prefix, alone = [], []
    for i in range(repeats):
        suffix = suffixes[i + 1]
        with_prefix.append(
            timed(lambda: engine.evaluate([EvalRequest(prefix + suffix, prefix_len=len(prefix), logits_at=[-1])]))
        )
        alone.append(timed(lambda: engine.evaluate([EvalRequest(suffix, logits_at=[-1])])))
    uncached = [timed(lambda: engine.evaluate([EvalRequest(prefix + suffixes[1], logits_at=[-1])])) for _ in range(2)]
    ratio = Spread.of([w / a for w, a in zip(with_prefix, alone)])

    # The floor.
    output_params = model.n_vocab * model.n_embd
    body_params = max(model.n_params - output_params, 0)  # tied output = token embedding table
    body_flops, logits_flops = 2 * body_params, 2 * output_params
    prompt_floor_s = (PROMPT_TOKENS * body_flops + logits_flops) / (gemm_gflops * 1e9)
    decode_flops_per_token = body_flops + logits_flops
    batched_gflops = batched_tps.median * decode_flops_per_token / 1e9
    kv_mb = engine.kv_cache_bytes() / 2**20
    result = {
        "model": name,
        "path": path,
        "architecture": model.architecture,
        "n_params": model.n_params,
        "n_vocab": model.n_vocab,
        "threads": threads,
        "gemm_gflops": gemm_gflops,
        "prompt_tps": PROMPT_TOKENS / statistics.median(prompt_s),
        "prompt_tps_spread": Spread.of([PROMPT_TOKENS / s for s in prompt_s]).as_dict(),
        "prompt_floor_tps": PROMPT_TOKENS / prompt_floor_s,
        "decode_tps": decode_tps.median,
        "decode_tps_spread": decode_tps.as_dict(),
        "batched_decode_tps": batched_tps.median,
        "batched_decode_tps_spread": batched_tps.as_dict(),
        "batched_decode_speedup": batched_tps.median / decode_tps.median,
        "batched_decode_gflops": batched_gflops,
        "batched_decode_fraction_of_gemm": batched_gflops / gemm_gflops,
        "decode_floor_tps": gemm_gflops * 1e9 / decode_flops_per_token,
        "prefix_reuse_ratio": ratio.median,
        "prefix_reuse_ratio_spread": ratio.as_dict(),
        "prefix_request_ms": 1000 * statistics.median(with_prefix),
        "suffix_alone_ms": 1000 * statistics.median(alone),
        "uncached_430_ms": 1000 * statistics.median(uncached),
        "prefix_cache": engine.prefix_stats().as_dict(),
        "gguf_mb": model.file_bytes / 2**20,
        "kv_cache_mb": kv_mb,
        "rss_before_load_mb": rss_start,
        "rss_after_load_mb": rss_after_load,
        "rss_mb": rss_mb(),
    }
    result["rss_over_gguf_plus_kv"] = (result["rss_mb"] - rss_start) / (result["gguf_mb"] + kv_mb)
    engine.close()
    return result


def table_rows(report: dict) -> list[tuple[str, list[str]]]:
    """The report as (measure, one cell per model) rows, for the CLI table and the README."""

    def spread(d: dict, key: str, fmt: str = "{:.0f}") -> str:
        s = d[f"{key}_spread"]
        return f"{fmt.format(d[key])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"

    def own(d: dict, key: str) -> float:  # the model's own memory, without the interpreter's
        return d[key] - d["rss_before_load_mb"]

    rows: list[tuple[str, Callable[[dict], str]]] = [
        ("prompt tok/s, 512 tokens", lambda d: spread(d, "prompt_tps")),
        ("  floor at the GEMM rate", lambda d: f"{d['prompt_floor_tps']:.0f}"),
        ("decode tok/s, 1 sequence", lambda d: spread(d, "decode_tps", "{:.1f}")),
        ("decode tok/s, 16 batched", lambda d: spread(d, "batched_decode_tps")),
        ("batched decoding speedup", lambda d: f"{d['batched_decode_speedup']:.2f}×"),
        (
            "batched decoding GFLOP/s (share of GEMM)",
            lambda d: f"{d['batched_decode_gflops']:.0f} ({100 * d['batched_decode_fraction_of_gemm']:.0f} %)",
        ),
        ("400 cached + 30 new tokens, ms", lambda d: f"{d['prefix_request_ms']:.1f}"),
        ("30 tokens alone, ms", lambda d: f"{d['suffix_alone_ms']:.1f}"),
        ("430 tokens uncached, ms", lambda d: f"{d['uncached_430_ms']:.0f}"),
        ("prefix reuse ratio", lambda d: spread(d, "prefix_reuse_ratio", "{:.2f}")),
        ("GGUF / KV cache (4096 cells), MiB", lambda d: f"{d['gguf_mb']:.0f} / {d['kv_cache_mb']:.0f}"),
        ("RSS after load / after runs, MiB", lambda d: f"{own(d, 'rss_after_load_mb'):.0f} / {own(d, 'rss_mb'):.0f}"),
        (
            "RSS ÷ (GGUF + KV), after load / after runs",
            lambda d: f"{own(d, 'rss_after_load_mb') / (d['gguf_mb'] + d['kv_cache_mb']):.2f} / {d['rss_over_gguf_plus_kv']:.2f}",
        ),
    ]
    models = list(report["models"].values())
    return [(label, [cell(d) for d in models]) for label, cell in rows]


def run_in_child(path: str, name: str, *, threads: int, repeats: int, gemm_gflops: float) -> dict:
    """Measure one model in a fresh interpreter so its memory figures are its own."""
    args = json.dumps({"path": path, "name": name, "threads": threads, "repeats": repeats, "gemm_gflops": gemm_gflops})
    proc = subprocess.run(
        [sys.executable, "-m", "workhorse.bench.engine_bench", args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if proc.returncode != 0:
        from workhorse.errors import WorkhorseError

        raise WorkhorseError(f"benchmark of {name} failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(bench_model(spec.pop("path"), spec.pop("name"), **spec)))
