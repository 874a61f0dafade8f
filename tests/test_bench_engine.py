"""`workhorse bench engine` end to end on the tiny model (the real models run in `-m slow`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

REQUIRED = {"prompt_tps", "decode_tps", "batched_decode_speedup", "prefix_reuse_ratio", "gemm_gflops", "rss_mb"}


def test_bench_engine_json_on_a_gguf_path(tiny_gguf):
    proc = subprocess.run(
        [sys.executable, "-m", "workhorse.cli", "bench", "engine", "--model", str(tiny_gguf), "--repeats", "1", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["gemm_gflops"] > 0
    (figures,) = report["models"].values()
    assert REQUIRED <= figures.keys()
    assert figures["prompt_tps"] > 0 and figures["decode_tps"] > 0
    assert figures["batched_decode_tps"] > 0 and figures["prefix_reuse_ratio"] > 0
    assert figures["prefix_cache"]["hits"] >= 1
    assert figures["rss_mb"] > figures["rss_before_load_mb"]


@pytest.mark.slow
def test_bench_engine_on_the_builtin_models():
    proc = subprocess.run([sys.executable, "-m", "workhorse.cli", "bench", "engine", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    models = json.loads(proc.stdout)["models"]
    assert models["gemma3-270m"]["batched_decode_speedup"] >= 2
    assert all(m["prefix_reuse_ratio"] <= 1.3 for m in models.values())
