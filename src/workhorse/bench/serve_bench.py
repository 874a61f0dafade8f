"""`workhorse bench serve`: `workhorse serve` under load beside `python -m llama_cpp.server` on the
same models, one server at a time on this machine, over loopback HTTP.

- classification: workhorse's task endpoint (a trained head on gemma3-270m) against the chat
  baseline on llama_cpp.server (qwen2.5-coder-0.5b, label list in the system message, parse the
  reply), both measured for accuracy on the answers they gave;
- embeddings: `/v1/embeddings` on gemma3-270m (mean pooling) on both;
- rising concurrency for workhorse, 8 clients for both sides, then an open-loop run at half of
  workhorse's saturation throughput for the p99; the workhorse server's peak resident memory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from workhorse.bench.classify_bench import parse_label
from workhorse.bench.load import LoadResult, closed_loop, open_loop
from workhorse.evals.datasets import Dataset

CLIENTS = 8
SYSTEM_PROMPT = (
    "You are a customer support ticket classifier. Answer with exactly one label from this list and nothing else:\n"
)


@dataclass
class Setup:
    """What the servers run: the task and models, on this many threads."""

    data: Dataset
    task: str
    classify_model: str  # the baseline's chat model (a built-in name); workhorse loads it too
    embed_model: str
    threads: int
    log: Callable[[str], None]

    def workhorse_command(self, port: int, *extra: str) -> list[str]:
        # The load cycles through a fixed list of texts: with the embedding cache on, all but the first
        # round would be lookups, and the comparison with llama_cpp.server would be of a cache with a model.
        return workhorse_serve_command(port, self.threads, "--model", self.embed_model, "--model", self.classify_model,
                                       "--task", self.task, "--embedding-cache-mb", "0", *extra)


def workhorse_serve_command(port: int, threads: int, *args: str) -> list[str]:
    # Calls are logged as in production, but to a scratch file, not the user's call log.
    call_log = Path(tempfile.mkdtemp(prefix="workhorse-bench-")) / "calls.db"
    return [sys.executable, "-m", "workhorse.cli", "serve", "--port", str(port), "--threads", str(threads),
            "--call-log", str(call_log), *args]


def llama_server_command(path: str, port: int, threads: int, *extra: str) -> list[str]:
    """`python -m llama_cpp.server` on one GGUF, mean pooling by default (see below)."""
    args = ["--model", path, "--model_alias", Path(path).stem, "--host", "127.0.0.1", "--port", str(port),
            "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "2048", *extra]
    return [sys.executable, "-c", _LLAMA_SERVER_WITH_MEAN_POOLING, *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory:
    """Samples a process's resident memory every 0.2 s while in use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def server(command: list[str], url: str, ready_path: str, *, env: dict[str, str] | None = None, timeout: float = 300):
    """Run a server process until the block ends; waits until `ready_path` answers 200."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below; its tail explains a failed start
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"server exited with {process.returncode}: {' '.join(command)}\n{tail}")
            try:
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout:.0f} s: {' '.join(command)}")
            time.sleep(0.25)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _accuracy(result: LoadResult, data: Dataset, label_of: Callable[[dict], str | None]) -> tuple[float, float]:
    """(accuracy over the requests answered, share of answers that named no label)."""
    if not result.answers:
        return 0.0, 0.0
    examples = data.examples
    labels = [label_of(answer) for _, answer in result.answers]
    correct = sum(label == examples[i % len(examples)].label for (i, _), label in zip(result.answers, labels, strict=True))
    return correct / len(result.answers), sum(label is None for label in labels) / len(labels)


def side_summary(result: LoadResult, accuracy: tuple[float, float] | None = None) -> dict[str, Any]:
    out = result.summary()
    if accuracy is not None:
        out["accuracy"], out["invalid_rate"] = accuracy
    return out


# llama_cpp.server has no pooling flag, and gemma3's GGUF names no pooling, so its /v1/embeddings
# would return one vector per token. The baseline runs the server unchanged except for mean
# pooling (what workhorse computes), set as the default of every Llama it creates.
_LLAMA_SERVER_WITH_MEAN_POOLING = """
import sys, llama_cpp
from llama_cpp.server.__main__ import main
_init = llama_cpp.Llama.__init__
def _mean_pooled(self, *args, **kwargs):
    kwargs.setdefault("pooling_type", llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    _init(self, *args, **kwargs)
llama_cpp.Llama.__init__ = _mean_pooled
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
main()
"""


def run(
    config: Setup, *, levels: tuple[int, ...], requests: int, baseline_requests: int, half_load_seconds: float
) -> dict[str, Any]:
    """`requests` per concurrency level (scaled up by concurrency / 2)."""
    from workhorse.errors import WorkhorseError
    from workhorse.models import resolve

    try:
        import sse_starlette  # noqa: F401 - llama_cpp.server needs it
        import starlette_context  # noqa: F401
    except ImportError:
        raise WorkhorseError(
            "the llama_cpp.server baseline needs sse-starlette and starlette-context", "run scripts/setup --bench"
        ) from None

    data = config.data
    texts = [ex.text for ex in data.examples]
    shorts = short_texts(data)
    classify_path = str(resolve(config.classify_model).path)
    embed_path = str(resolve(config.embed_model).path)

    def task_request(i: int) -> tuple[str, dict]:
        return f"/v1/tasks/{config.task}", {"input": texts[i % len(texts)]}

    def embed_request(model: str) -> Callable[[int], tuple[str, dict]]:
        return lambda i: ("/v1/embeddings", {"model": model, "input": shorts[i % len(shorts)], "encoding_format": "float"})

    system = SYSTEM_PROMPT + "\n".join(data.labels)

    def chat_request(i: int) -> tuple[str, dict]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": texts[i % len(texts)]}]
        return "/v1/chat/completions", {"model": config.classify_model, "messages": messages, "max_tokens": 16, "temperature": 0}

    report: dict[str, Any] = {"data": f"{data.name}:{data.split}", "clients": CLIENTS, "threads": config.threads}

    # -- workhorse ----------------------------------------------------------------------------
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = config.workhorse_command(port)
    config.log(f"workhorse serve: {config.task} and embeddings ({config.embed_model}), {config.classify_model} loaded too")
    with server(command, url, "/readyz") as process, PeakMemory(process.pid) as memory:
        closed_loop(url, task_request, 4, 16)  # warm-up: the task's prefix, the batcher
        closed_loop(url, embed_request(config.embed_model), 4, 16)
        wh_classify = []
        for level in levels:
            result = closed_loop(url, task_request, level, max(requests, requests * level // 2))
            wh_classify.append(side_summary(result, _accuracy(result, data, lambda a: a.get("answer"))))
            config.log(f"  classify  c={level:>2}: {result.throughput:6.1f} req/s")
        wh_embed = []
        for level in levels:
            result = closed_loop(url, embed_request(config.embed_model), level, max(requests, requests * level // 2))
            wh_embed.append(side_summary(result))
            config.log(f"  embed     c={level:>2}: {result.throughput:6.1f} req/s")
        saturation = max(side["requests_per_s"] for side in wh_embed)
        half = open_loop(url, embed_request(config.embed_model), saturation / 2, half_load_seconds)
        config.log(f"  embed at half load ({saturation / 2:.1f} req/s): p99 {half.summary()['latency_ms']['p99']:.1f} ms")
        metrics = httpx.get(url + "/metrics").text
    report["workhorse_rss_mb_peak"] = memory.peak
    report["workhorse_prefix_cache_hit_rate"] = metric_value(metrics, "workhorse_prefix_cache_hit_rate", model=config.embed_model)

    # -- llama_cpp.server baselines -----------------------------------------------------------
    def llama_server(path: str, port: int, *extra: str) -> list[str]:
        return llama_server_command(path, port, config.threads, *extra)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config.log(f"llama_cpp.server: chat baseline on {config.classify_model}")
    alias = Path(classify_path).stem

    def baseline_chat(i: int) -> tuple[str, dict]:
        path, body = chat_request(i)
        return path, body | {"model": alias}

    with server(llama_server(classify_path, port), url, "/v1/models"):
        closed_loop(url, baseline_chat, 2, 4)  # warm-up
        base_classify = closed_loop(url, baseline_chat, CLIENTS, baseline_requests)
        labels = data.labels
        accuracy = _accuracy(base_classify, data, lambda a: parse_label(a["choices"][0]["message"]["content"] or "", labels))
        config.log(f"  classify  c={CLIENTS}: {base_classify.throughput:6.2f} req/s, accuracy {100 * accuracy[0]:.1f} %")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config.log(f"llama_cpp.server: embeddings on {config.embed_model} (mean pooling)")
    with server(llama_server(embed_path, port, "--embedding", "true"), url, "/v1/models"):
        embed_alias = Path(embed_path).stem
        closed_loop(url, embed_request(embed_alias), 2, 8)
        base_embed = closed_loop(url, embed_request(embed_alias), CLIENTS, max(requests, requests * CLIENTS // 2))
        config.log(f"  embed     c={CLIENTS}: {base_embed.throughput:6.1f} req/s")

    at = levels.index(CLIENTS) if CLIENTS in levels else -1
    wh_c, wh_e = wh_classify[at], wh_embed[at]
    report["classification"] = {
        "workhorse": wh_c | {"model": config.embed_model, "task": config.task, "sweep": wh_classify},
        "baseline": side_summary(base_classify, accuracy) | {"model": config.classify_model, "server": "llama_cpp.server"},
        "speedup": wh_c["requests_per_s"] / max(base_classify.throughput, 1e-9),
    }
    report["embeddings"] = {
        "workhorse": wh_e | {"model": config.embed_model, "sweep": wh_embed, "saturation_per_s": saturation},
        "baseline": side_summary(base_embed) | {"model": config.embed_model, "server": "llama_cpp.server"},
        "speedup": wh_e["requests_per_s"] / max(base_embed.throughput, 1e-9),
        "p99_ms_at_half_load": half.summary()["latency_ms"]["p99"],
        "half_load": half.summary(),
    }
    return report


def short_texts(data: Dataset) -> list[str]:
    """The embedding load's inputs: each text's first 20 words (≤ 32 tokens, the latency figure's size)."""
    return [" ".join(ex.text.split()[:20]) for ex in data.examples]


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of sample `name` in `/metrics` text, on the line whose labels include `labels`."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        sample, _, label_text = head.partition("{")
        if sample == name and all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
            return float(value)
    return None


def soak(
    config: Setup, *, minutes: float, overload: float = 2.0, rate: float | None = None, warmup_s: float = 60.0
) -> dict[str, Any]:
    """`workhorse serve` under open-loop arrivals at `overload` × its measured saturation (or at
    `rate` requests/s, e.g. twice a saturation measured on a quiet machine) for `minutes`,
    classification and embeddings interleaved; resident memory sampled every 5 s."""
    texts = [ex.text for ex in config.data.examples]

    def mixed(i: int) -> tuple[str, dict]:
        if i % 2:
            return "/v1/embeddings", {"model": config.embed_model, "input": texts[i % len(texts)], "encoding_format": "float"}
        return f"/v1/tasks/{config.task}", {"input": texts[i % len(texts)]}

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = config.workhorse_command(port, "--default-deadline-ms", "10000")
    with server(command, url, "/readyz") as process:
        closed_loop(url, mixed, 4, 32)
        saturation = closed_loop(url, mixed, CLIENTS, 256).throughput
        rate = rate or overload * saturation
        config.log(f"saturation {saturation:.1f} req/s; soaking at {rate:.1f} req/s for {minutes:g} min")
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.wait(5.0):
                samples.append((time.monotonic() - started, rss_mb(process.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = open_loop(url, mixed, rate, minutes * 60, seed=1)
        stop.set()
        sampler.join()
        alive = process.poll() is None and httpx.get(url + "/healthz", timeout=5).status_code == 200
    after_warmup = next((rss for t, rss in samples if t >= warmup_s), samples[0][1] if samples else 0.0)
    final = samples[-1][1] if samples else 0.0
    unanswered = result.statuses.get(0, 0)  # connection failures: neither an answer nor a refusal
    other = {code: n for code, n in result.statuses.items() if code not in (0, 200, 429, 504)}
    return {
        "minutes": minutes,
        "saturation_per_s": saturation,
        "offered_per_s": rate,
        "sent": result.sent,
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "unanswered": unanswered,
        "unexpected_statuses": {str(k): v for k, v in other.items()},
        "server_alive_after": alive,
        "rss_mb_after_warmup": after_warmup,
        "rss_mb_final": final,
        "rss_growth": (final - after_warmup) / after_warmup if after_warmup else None,
        "rss_samples": samples,
        "latency_ms": result.summary()["latency_ms"],
    }
